// Protocol abuse against `mirage serve`: each hostile client must be closed with the right code
// and a reason, while a well-behaved client sending frames the whole time keeps being served.
//   node abuse.js PORT JPEG_DIR
// The server runs with the test's limits (tests/test_serve.sh): --size 32x32 --max-sessions 4
// --max-message 65536 --max-frame 320x240 --max-fps 30 --idle-timeout 3 --message-timeout 2
// --handshake-timeout 2. Prints "ok"/"FAIL" per case and a final JSON line; exit 0 if all passed.
'use strict';
const fs = require('fs');
const net = require('net');
const http = require('http');
const crypto = require('crypto');
const { connect, frameMessage, parseOutput } = require('./ws.js');

const port = +process.argv[2], dir = process.argv[3];
const jpeg32 = fs.readFileSync(dir + '/a32.jpg'), jpeg64 = fs.readFileSync(dir + '/a64.jpg');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const withTimeout = (p, ms, what) => Promise.race([p, sleep(ms).then(() => { throw new Error(what + ': no close within ' + ms + ' ms'); })]);
let pass = 0, fail = 0;
const failures = [];
function report(ok, name, detail) {
  if (ok) pass++; else { fail++; failures.push(name); }
  console.log(`  ${ok ? 'ok  ' : 'FAIL'}  ${name}${detail ? ' — ' + detail : ''}`);
}

function httpGet(p) {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port, path: p }, (res) => {
      let s = '';
      res.on('data', (d) => { s += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: s }));
    }).on('error', (e) => resolve({ status: 0, body: String(e) }));
  });
}

// Opens a session, does `act`, and expects the server to close it with `code` and a reason matching `re`.
async function expectClose(name, act, code, re, ms = 8000) {
  try {
    const c = await connect(port);
    await act(c);
    const info = await withTimeout(c.closed, ms, name);
    const codeOk = Array.isArray(code) ? code.includes(info.code) : info.code === code;
    report(codeOk && re.test(info.reason), name, `${info.code} "${info.reason}"`);
  } catch (e) {
    report(false, name, String(e.message || e));
  }
}

// Raw TCP: the server must drop a connection that never finishes its handshake.
function expectDropped(name, bytes, ms) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect(port, '127.0.0.1', () => { if (bytes) s.write(bytes); });
    const timer = setTimeout(() => { s.destroy(); report(false, name, `still open after ${ms} ms`); resolve(); }, ms);
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(timer); report(true, name, `dropped after ${Date.now() - t0} ms`); resolve(); });
    s.on('data', () => {});
  });
}

async function main() {
  // The bystander: a good client at 10 frames/s for the whole run.
  const good = await connect(port);
  const goodTimes = [];
  let goodClosed = null;
  good.on('binary', (b) => { const o = parseOutput(b); if (o && o.width === 32) goodTimes.push(Date.now()); });
  good.on('close', (i) => { goodClosed = i; });
  let seq = 0;
  const pump = setInterval(() => good.sendBinary(frameMessage(seq++, performance.now(), 32, 32, jpeg32)), 100);
  const t0 = Date.now();

  const hello = await (async () => { const c = await connect(port); const h = await new Promise((r) => c.once('text', r)); c.close(); await c.closed; return JSON.parse(h); })();
  report(hello.type === 'hello' && hello.width === 32 && hello.prompts.length >= 2 && hello.limits.max_message === 65536,
    'hello names the size, the prompts and the limits', `${hello.width}x${hello.height}, ${hello.prompts.length} prompts`);

  const frame = (w, h, j) => frameMessage(1, performance.now(), w, h, j);
  await expectClose('oversized message', (c) => c.sendBinary(crypto.randomBytes(70000)), 1009, /too big/);
  await expectClose('garbage binary', (c) => c.sendBinary(crypto.randomBytes(1000)), 1008, /MGF1/);
  await expectClose('message shorter than its header', (c) => c.sendBinary(Buffer.from('MGF1x')), 1008, /shorter/);
  await expectClose('malformed JPEG (garbage after the SOI marker)',
    (c) => c.sendBinary(frame(32, 32, Buffer.concat([Buffer.from([0xff, 0xd8]), crypto.randomBytes(3000)]))), 1007, /malformed JPEG/);
  await expectClose('truncated JPEG', (c) => c.sendBinary(frame(64, 64, jpeg64.subarray(0, jpeg64.length >> 1))), 1007, /malformed JPEG/);
  await expectClose('not a JPEG at all', (c) => c.sendBinary(frame(32, 32, Buffer.from('GIF89a......'))), 1008, /malformed JPEG/);
  await expectClose('wrong dimensions (header 48x48, JPEG 64x64)', (c) => c.sendBinary(frame(48, 48, jpeg64)), 1008, /wrong dimensions/);
  await expectClose('frame larger than --max-frame', (c) => c.sendBinary(frame(4000, 3000, jpeg64)), 1009, /larger than the limit/);
  await expectClose('garbage text', (c) => c.sendText('{"type": nope'), 1008, /bad control message/);
  await expectClose('unknown message type', (c) => c.sendText('{"type":"exec","cmd":"rm"}'), 1008, /bad control message/);
  await expectClose('unknown prompt', (c) => c.sendText('{"type":"config","prompt":"../../etc/passwd"}'), 1008, /no prompt named/);
  await expectClose('steps out of range', (c) => c.sendText('{"type":"config","steps":1000}'), 1008, /steps/);
  await expectClose('invalid UTF-8 text', (c) => c.sendFrame(1, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), [1007, 1002], /.*/);
  // RFC 6455 says a server must close on an unmasked frame; lws 4.1 takes it, so its content is
  // judged like any other message's (here: not a frame)
  await expectClose('unmasked client frame', (c) => c.raw(Buffer.from([0x82, 0x05, 1, 2, 3, 4, 5])), [1002, 1006, 1008], /.*/);
  await expectClose('reserved opcode', (c) => c.sendFrame(3, Buffer.from('x')), [1002, 1006], /.*/);
  await expectClose('frame flood (rate limit)', async (c) => { for (let i = 0; i < 200; i++) c.sendBinary(frame(32, 32, jpeg32)); }, 1008, /rate limit/);
  await expectClose('slow sender (a byte every 300 ms)', async (c) => {
    const msg = frame(32, 32, jpeg32);
    // one WebSocket frame whose header announces the whole message, then its bytes trickle in
    const hdr = Buffer.from([0x82, 0x80 | 126, msg.length >> 8, msg.length & 255, 0, 0, 0, 0]);
    c.raw(hdr);
    let i = 0;
    const t = setInterval(() => { if (i < msg.length) c.raw(msg.subarray(i, ++i)); }, 300);
    c.closed.then(() => clearInterval(t));
  }, 1008, /too slow/);
  await expectClose('idle session', async () => {}, 1008, /idle/);
  await expectDropped('half-open: TCP connect, nothing sent', null, 8000);
  await expectDropped('half-open: HTTP headers never finished', 'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n', 8000);

  // server full: the bystander holds one of 4 sessions; fill the rest, then one more
  const holders = [];
  for (let i = 0; i < 3; i++) holders.push(await connect(port));
  await expectClose('server full (one more than --max-sessions)', async () => {}, 1013, /server full/);
  for (const h of holders) { h.close(); await h.closed; }
  await sleep(200);
  await expectClose('a place is free again after the others left', (c) => c.sendText('{"type":"config","steps":0}'), 1008, /steps/);

  const r404 = await httpGet('/../../etc/passwd'), rIdx = await httpGet('/'), rStats = await httpGet('/stats');
  report(r404.status === 404, 'GET of a path outside the page: 404', String(r404.status));
  report(rIdx.status === 200 && /<canvas id="output"/.test(rIdx.body), 'GET / serves the page', String(rIdx.status));
  let stats = {};
  try { stats = JSON.parse(rStats.body); } catch (e) { /* checked below */ }
  report(rStats.status === 200 && stats.closed_by_server >= 15, 'GET /stats counts the closes', `closed_by_server ${stats.closed_by_server}`);

  clearInterval(pump);
  await sleep(500);
  const secs = (Date.now() - t0) / 1000;
  let gap = 0;
  for (let i = 1; i < goodTimes.length; i++) gap = Math.max(gap, goodTimes[i] - goodTimes[i - 1]);
  report(!goodClosed && goodTimes.length >= secs * 3 && gap < 3000,
    'the well-behaved client was served throughout', `${goodTimes.length} frames in ${secs.toFixed(0)} s, longest gap ${gap} ms`);
  good.close();
  console.log(JSON.stringify({ pass, fail, failures, stats }));
  process.exit(fail ? 1 : 0);
}
main().catch((e) => { console.log('FAIL  abuse.js: ' + (e.stack || e)); process.exit(1); });
