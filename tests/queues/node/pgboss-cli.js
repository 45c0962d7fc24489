// pg-boss 10 driven from tests/integration/test_queue_packs.py (the real library).
//   migrate DSN QUEUE...        pg-boss's own migrator creates the schema; queues created
//   send DSN QUEUE NAME EXPIRE [RETRY_LIMIT]
//                               prints the new job id (expireInSeconds = EXPIRE, retryLimit
//                               = RETRY_LIMIT, default 2)
//   work DSN QUEUE DIR          a live worker: each job runs hold(DIR, data.name)
// Maintenance (supervise) is off in every process: the bot, not pg-boss's own expiry,
// is what the test exercises.
"use strict";
const PgBoss = require("pg-boss");
const { hold } = require("./hold");

async function boss(dsn) {
  const b = new PgBoss({ connectionString: dsn, supervise: false, schedule: false, max: 2 });
  b.on("error", (err) => console.error(err));
  await b.start();
  return b;
}

async function main() {
  const [cmd, dsn, ...args] = process.argv.slice(2);
  if (cmd === "migrate") {
    const b = await boss(dsn);
    for (const q of args) await b.createQueue(q);
    await b.stop({ graceful: false, wait: true });
  } else if (cmd === "send") {
    const [queue, name, expire, retryLimit = "2"] = args;
    const b = await boss(dsn);
    const id = await b.send(
      queue,
      { name },
      { expireInSeconds: Number(expire), retryLimit: Number(retryLimit) },
    );
    console.log(id);
    await b.stop({ graceful: false, wait: true });
  } else if (cmd === "work") {
    const [queue, dir] = args;
    const b = await boss(dsn);
    await b.work(queue, { pollingIntervalSeconds: 0.5 }, async ([job]) => hold(dir, job.data.name));
    console.log("working");
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
