// graphile-worker 0.17 driven from tests/integration/test_queue_packs.py (the real library).
//   migrate DSN                 graphile-worker's own migrator creates the schema
//   add DSN QUEUE NAME          prints the new job id (task "hold", named queue QUEUE)
//   work DSN DIR                a live worker: each job runs hold(DIR, payload.name)
"use strict";
const { run, runMigrations, makeWorkerUtils } = require("graphile-worker");
const { hold } = require("./hold");

async function main() {
  const [cmd, dsn, ...args] = process.argv.slice(2);
  if (cmd === "migrate") {
    await runMigrations({ connectionString: dsn });
  } else if (cmd === "add") {
    const [queue, name] = args;
    const utils = await makeWorkerUtils({ connectionString: dsn });
    const job = await utils.addJob("hold", { name }, { queueName: queue, maxAttempts: 5 });
    console.log(job.id);
    await utils.release();
  } else if (cmd === "work") {
    const [dir] = args;
    const runner = await run({
      connectionString: dsn,
      concurrency: 1,
      pollInterval: 200,
      taskList: { hold: async (payload) => hold(dir, payload.name) },
    });
    console.log("working");
    await runner.promise;
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
