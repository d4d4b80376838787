// Load on loopback, bounded in time: CLIENTS well-behaved sessions sending frames at FPS, SLOW
// sessions that send but hardly read (the server must drop their output, not buffer it), and
// ABUSIVE clients that keep connecting and breaking the protocol (each must be closed with a
// reason). Samples GET /stats while it runs.
//   node load.js PORT SECONDS CLIENTS SLOW ABUSIVE FPS JPEG_DIR
// Prints progress lines, then one JSON line of figures; exits 1 if a check failed.
'use strict';
const crypto = require('crypto');
const { connect, frameMessage, parseOutput } = require('./ws.js');
const { sleep, readFrames, stats, finish, run } = require('./harness.js');

const [port, seconds, nClients, nSlow, nAbusive, fps] = process.argv.slice(2, 8).map(Number);
const dir = process.argv[8];
const frames = readFrames(dir);
const tEnd = Date.now() + seconds * 1000;

// A session that sends a frame every 1000/fps ms until the end. Slow ones stop reading their socket
// for the whole run (they read what piled up at the end) and send at SLOW_FPS, so that once the
// kernel's buffers are full (a few hundred KB on loopback) the server's writes to them stall and
// their outputs must be replaced, not queued.
const SLOW_FPS = 25;
async function sender(slow) {
  const r = { sent: 0, got: 0, lat: [], closed: null, connectError: null, maxGap: 0, last: 0 };
  let c;
  try { c = await connect(port); } catch (e) { r.connectError = String(e.message || e); return r; }
  c.on('binary', (b) => {
    const o = parseOutput(b);
    if (!o) return;
    r.got++;
    const now = performance.now();
    r.lat.push(now - o.t);
    if (r.last && !slow) r.maxGap = Math.max(r.maxGap, now - r.last);
    r.last = now;
  });
  c.on('close', (i) => { if (Date.now() < tEnd - 100) r.closed = i; });
  if (slow) c.once('text', () => c.sock.pause()); // after the hello
  let seq = 0;
  const rate = slow ? SLOW_FPS : fps;
  await sleep(Math.random() * 1000 / rate);
  while (Date.now() < tEnd && !c.closeInfo) {
    c.sendBinary(frameMessage(seq, performance.now(), 32, 32, frames[seq % frames.length]));
    seq++;
    r.sent++;
    await sleep(1000 / rate);
  }
  c.sock.resume();
  await sleep(300);
  c.close();
  await Promise.race([c.closed, sleep(2000)]);
  return r;
}

const ABUSES = [
  ['garbage', (c) => c.sendBinary(crypto.randomBytes(2000))],
  ['oversized', (c) => c.sendBinary(crypto.randomBytes(70000))],
  ['bad JPEG', (c) => c.sendBinary(frameMessage(0, 0, 32, 32, Buffer.concat([Buffer.from([0xff, 0xd8]), crypto.randomBytes(800)])))],
  ['wrong size', (c) => c.sendBinary(frameMessage(0, 0, 40, 40, frames[0]))],
  ['flood', (c) => { for (let i = 0; i < 120; i++) c.sendBinary(frameMessage(i, 0, 32, 32, frames[0])); }],
  ['bad text', (c) => c.sendText('{"type":"config","steps":"lots"}')],
];

async function abuser(k) {
  const r = { sessions: 0, closedWithReason: 0, unexplained: [] };
  for (let i = k; Date.now() < tEnd - 1500; i++) {
    const [name, act] = ABUSES[i % ABUSES.length];
    let c;
    try { c = await connect(port); } catch (e) { r.unexplained.push(name + ': ' + e.message); await sleep(500); continue; }
    r.sessions++;
    act(c);
    const info = await Promise.race([c.closed, sleep(5000).then(() => null)]);
    if (info && info.code >= 1002 && info.code !== 1006 && info.reason) r.closedWithReason++;
    else { r.unexplained.push(name + ': ' + JSON.stringify(info)); c.destroy(); }
    await sleep(200);
  }
  return r;
}

function quantile(a, q) {
  if (!a.length) return 0;
  const b = a.slice().sort((x, y) => x - y);
  return b[Math.min(b.length - 1, Math.max(0, Math.ceil(q * b.length) - 1))];
}

async function main() {
  const s0 = await stats(port);
  let rssPeak = s0 ? s0.rss_kib : 0;
  const t0 = Date.now();
  const monitor = setInterval(async () => {
    const s = await stats(port);
    if (!s) return;
    rssPeak = Math.max(rssPeak, s.rss_kib);
    console.log(`load | ${((Date.now() - t0) / 1000).toFixed(0)} s | ${s.sessions} sessions | ${s.frames_out} served | ` +
      `server p50 ${s.latency_ms.p50.toFixed(1)} ms p99 ${s.latency_ms.p99.toFixed(1)} ms | dropped ${s.dropped_in} in, ` +
      `${s.dropped_out} out | closed by server ${s.closed_by_server} | RSS ${(s.rss_kib / 1024).toFixed(1)} MiB`);
  }, 5000);
  const jobs = [];
  for (let i = 0; i < nClients; i++) jobs.push(sender(false));
  for (let i = 0; i < nSlow; i++) jobs.push(sender(true));
  for (let i = 0; i < nAbusive; i++) jobs.push(abuser(i));
  const res = await Promise.all(jobs);
  clearInterval(monitor);
  await sleep(500);
  const s1 = await stats(port);
  const reg = res.slice(0, nClients), slow = res.slice(nClients, nClients + nSlow), ab = res.slice(nClients + nSlow);
  const lat = [].concat(...reg.map((r) => r.lat));
  const sum = (a, f) => a.reduce((x, r) => x + f(r), 0);
  const out = {
    seconds, clients: nClients, slow_readers: nSlow, abusive: nAbusive, fps_per_client: fps,
    frames_sent: sum(reg, (r) => r.sent), frames_served: sum(reg, (r) => r.got),
    latency_ms: { p50: +quantile(lat, 0.5).toFixed(1), p99: +quantile(lat, 0.99).toFixed(1), max: +quantile(lat, 1).toFixed(1) },
    min_client_fps: +Math.min(...reg.map((r) => r.got / seconds)).toFixed(2),
    // what each of the 16 + 2 sessions would get if the server's output were shared out evenly
    fair_share_fps: s1 ? +(s1.frames_out / (nClients + nSlow) / seconds).toFixed(2) : 0,
    max_gap_ms: +Math.max(...reg.map((r) => r.maxGap)).toFixed(0),
    slow: { sent: sum(slow, (r) => r.sent), received: sum(slow, (r) => r.got) },
    abusive_sessions: sum(ab, (r) => r.sessions), abusive_closed_with_reason: sum(ab, (r) => r.closedWithReason),
    unexplained: [].concat(...ab.map((r) => r.unexplained)).slice(0, 5),
    clients_closed_early: reg.concat(slow).filter((r) => r.closed || r.connectError).map((r) => r.closed || r.connectError),
    server: s1 && { frames_in: s1.frames_in, frames_out: s1.frames_out, dropped_in: s1.dropped_in, dropped_out: s1.dropped_out,
      closed_by_server: s1.closed_by_server, rejected_full: s1.rejected_full, model_ms_p50: s1.model_ms.p50, sessions_after: s1.sessions },
    rss_kib: { start: s0 && s0.rss_kib, peak: rssPeak, end: s1 && s1.rss_kib },
  };
  out.drops = out.frames_sent - out.frames_served;
  finish(out, {
    server_answered: !!s1,
    // fairness, whatever the machine's speed (a sanitizer build is 10x slower): every client gets at
    // least half its even share of the server's output, and never waits 5 s for a frame
    every_client_served: out.min_client_fps >= 0.5 * out.fair_share_fps && out.min_client_fps > 0 &&
      out.max_gap_ms < 5000 && out.clients_closed_early.length === 0,
    latency_bounded: out.latency_ms.p99 < 3000,
    abusers_closed_with_reason: out.abusive_sessions > 0 && out.abusive_closed_with_reason === out.abusive_sessions,
    sessions_released: !!s1 && s1.sessions === 0,
  });
}
run(main);
