// What the timed serve scripts (load.js, churn.js) share: the JPEG frames they send, GET /stats
// while they run, and the end: one JSON line with out.checks and out.ok, exit 1 if a check failed.
'use strict';
const fs = require('fs');
const http = require('http');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// DIR's f<digits>.jpg, in name order
function readFrames(dir) {
  return fs.readdirSync(dir).filter((f) => /^f\d+\.jpg$/.test(f)).sort().map((f) => fs.readFileSync(dir + '/' + f));
}

// the server's counters, or null when it did not answer with JSON
function stats(port) {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port, path: '/stats', agent: false }, (res) => {
      let s = '';
      res.on('data', (d) => { s += d; });
      res.on('end', () => { try { resolve(JSON.parse(s)); } catch (e) { resolve(null); } });
    }).on('error', () => resolve(null));
  });
}

function finish(out, checks) {
  out.checks = checks;
  out.ok = Object.values(checks).every(Boolean);
  console.log(JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
}

// main's promise: a throw ends the run as a failed JSON line
function run(main) {
  main().catch((e) => { console.log(JSON.stringify({ ok: false, error: String(e.stack || e) })); process.exit(1); });
}

module.exports = { sleep, readFrames, stats, finish, run };
