// Sessions coming and going against `mirage serve`, for the memory and fault checks of
// tests/test_faults.sh and scripts/reliability.sh (docs/RELIABILITY.md):
//   node churn.js PORT SECONDS CONCURRENCY JPEG_DIR [ENDINGS]
// Keeps CONCURRENCY short sessions open at all times; each sends 32x32 frames at 10 frames/s for
// 0.3 to 1.5 s, waits for its first output, then ends in the next way of ENDINGS (a comma list;
// default all four):
//   close    a clean WebSocket close
//   drop     the TCP socket closed without a close frame
//   half     half of a frame message's WebSocket frame (header and part of the payload), then
//            the socket closed: a client vanishing mid-frame
//   handshake  half of the HTTP upgrade request, then the socket closed
// A bystander session sends frames the whole time and must be served throughout (no gap of 5 s).
// Prints a line every 10 s and one JSON line at the end; exit 1 if a check failed.
'use strict';
const net = require('net');
const { connect, frameMessage, parseOutput } = require('./ws.js');
const { sleep, readFrames, stats, finish, run } = require('./harness.js');

const port = +process.argv[2], seconds = +process.argv[3], conc = +process.argv[4], dir = process.argv[5];
const endings = (process.argv[6] || 'close,drop,half,handshake').split(',');
const frames = readFrames(dir);
const t0 = Date.now(), tEnd = t0 + seconds * 1000;
let rnd = 12345; // a fixed sequence: the same run every time
const random = () => { rnd = (rnd * 1103515245 + 12345) % 2147483648; return rnd / 2147483648; };

const count = { sessions: 0, served: 0, unserved: 0, connect_errors: 0, frames_back: 0 };
for (const e of endings) count[e] = 0;
let ending = 0;

async function session() {
  const how = endings[ending++ % endings.length];
  count[how]++;
  if (how === 'handshake') {
    await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.write('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Up');
        setTimeout(() => { s.destroy(); resolve(); }, 50 + random() * 200);
      });
      s.on('error', () => resolve());
    });
    count.sessions++;
    return;
  }
  let c;
  try { c = await connect(port); } catch (e) { count.connect_errors++; await sleep(200); return; }
  count.sessions++;
  let got = 0;
  c.on('binary', (b) => { const o = parseOutput(b); if (o) { got++; count.frames_back++; } });
  const life = 300 + random() * 1200;
  const tStop = Date.now() + life;
  let seq = 0;
  while (Date.now() < tStop && !c.closeInfo) {
    c.sendBinary(frameMessage(seq, performance.now(), 32, 32, frames[seq % frames.length]));
    seq++;
    await sleep(100);
  }
  for (let i = 0; i < 40 && !got && !c.closeInfo; i++) await sleep(100); // its first output, up to 4 s
  if (got) count.served++; else count.unserved++;
  if (how === 'close') { c.close(); await Promise.race([c.closed, sleep(2000)]); c.destroy(); }
  else if (how === 'drop') c.sock.destroy();
  else if (how === 'half') {
    // one masked binary frame announcing a whole frame message; only its first half is sent
    const msg = frameMessage(seq, performance.now(), 32, 32, frames[0]);
    const hdr = Buffer.from([0x82, 0x80 | 126, msg.length >> 8, msg.length & 255, 0, 0, 0, 0]); // zero mask
    c.sock.write(Buffer.concat([hdr, msg.subarray(0, msg.length >> 1)]), () => c.sock.destroy());
    await sleep(20);
    c.sock.destroy();
  }
}

async function worker() { while (Date.now() < tEnd) await session(); }

async function main() {
  const by = await connect(port);
  const byTimes = [];
  let byClosed = null, bySeq = 0;
  by.on('binary', (b) => { if (parseOutput(b)) byTimes.push(Date.now()); });
  by.on('close', (i) => { byClosed = i; });
  const pump = setInterval(() => by.sendBinary(frameMessage(bySeq++, performance.now(), 32, 32, frames[bySeq % frames.length])), 100);
  const monitor = setInterval(async () => {
    const s = await stats(port);
    console.log(`churn | ${((Date.now() - t0) / 1000).toFixed(0)} s | ${count.sessions} sessions so far | ` +
      `${s ? s.sessions : '?'} open | ${count.frames_back} frames back | RSS ${s ? (s.rss_kib / 1024).toFixed(1) : '?'} MiB`);
  }, 10000);
  const jobs = [];
  for (let i = 0; i < conc; i++) jobs.push(worker());
  await Promise.all(jobs);
  clearInterval(monitor);
  clearInterval(pump);
  await sleep(500);
  let gap = 0;
  for (let i = 1; i < byTimes.length; i++) gap = Math.max(gap, byTimes[i] - byTimes[i - 1]);
  const byClosedEarly = byClosed; // before our own close below
  by.close();
  await Promise.race([by.closed, sleep(2000)]);
  await sleep(3500); // half-open connections: the server's handshake and message timeouts end them
  const s1 = await stats(port);
  const out = {
    seconds, concurrency: conc, endings, ...count,
    bystander: { frames: byTimes.length, longest_gap_ms: gap, closed_early: byClosedEarly },
    server: s1 && { sessions_after: s1.sessions, frames_in: s1.frames_in, frames_out: s1.frames_out, rss_kib: s1.rss_kib },
  };
  finish(out, {
    server_answered: !!s1,
    every_session_served: count.unserved === 0 && count.connect_errors === 0,
    // whatever the machine's speed (a sanitizer build on a busy machine serves a few frames a
    // second in all): never a wait of 5 s, as load.js asks of its clients
    bystander_served_throughout: !byClosedEarly && byTimes.length >= seconds / 2 && gap < 5000,
    sessions_released: !!s1 && s1.sessions === 0,
  });
}
run(main);
