// The job body every test worker runs: mark "<name>.started" (one line per run), then
// hold until "<name>.release" exists, so a test decides when (and whether) a job ends.
"use strict";
const fs = require("fs");
const path = require("path");

async function hold(dir, name) {
  fs.appendFileSync(path.join(dir, `${name}.started`), `${process.pid}\n`);
  const release = path.join(dir, `${name}.release`);
  while (!fs.existsSync(release)) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { name };
}

module.exports = { hold };
