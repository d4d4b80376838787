// End to end in a real browser: headless Chromium (Debian's) with a fake camera fed from a y4m
// clip opens the page served by `mirage serve`, sends its camera, and gets transformed frames back.
// Driven over Chromium's own remote-debugging protocol (CDP) with the test's WebSocket client.
//   node browser.js CHROMIUM SERVER_PORT CLIP.y4m OUT_DIR
// Prints one JSON line of results and exits 0 when every check passed, 1 otherwise.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const path = require('path');
const { connect } = require('./ws.js');

const [chromium, serverPort, clip, outDir] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deadline = Date.now() + 90000;

function getJSON(port, p) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p }, (res) => {
      let s = '';
      res.on('data', (d) => { s += d; });
      res.on('end', () => { try { resolve(JSON.parse(s)); } catch (e) { reject(e); } });
    }).on('error', reject);
  });
}

async function main() {
  const profile = fs.mkdtempSync(path.join(outDir, 'chromium-'));
  const args = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
    '--no-default-browser-check', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--use-file-for-fake-video-capture=' + clip, '--remote-debugging-port=0', '--user-data-dir=' + profile,
    '--window-size=1200,800', 'about:blank'];
  const chrome = spawn(chromium, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let errText = '';
  const devPort = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('Chromium did not start its debugger in 30 s: ' + errText.slice(-500))), 30000);
    chrome.stderr.on('data', (d) => {
      errText += d;
      const m = /DevTools listening on ws:\/\/[^:]+:(\d+)\//.exec(errText);
      if (m) { clearTimeout(t); resolve(+m[1]); }
    });
    chrome.on('exit', (c) => reject(new Error('Chromium exited (' + c + '): ' + errText.slice(-800))));
  });
  try {
    let targets = [];
    for (let i = 0; i < 50 && !targets.length; i++) {
      targets = (await getJSON(devPort, '/json/list')).filter((t) => t.type === 'page');
      if (!targets.length) await sleep(100);
    }
    if (!targets.length) throw new Error('no page target in Chromium');
    const wsPath = new URL(targets[0].webSocketDebuggerUrl).pathname;
    const cdp = await connect(devPort, { path: wsPath, protocol: null });
    let nextId = 1;
    const waiting = new Map();
    const consoleLines = [];
    cdp.on('text', (s) => {
      const m = JSON.parse(s);
      if (m.id && waiting.has(m.id)) { waiting.get(m.id)(m); waiting.delete(m.id); }
      else if (m.method === 'Runtime.consoleAPICalled') consoleLines.push(m.params.args.map((a) => a.value).join(' '));
      else if (m.method === 'Runtime.exceptionThrown') consoleLines.push('exception: ' + JSON.stringify(m.params.exceptionDetails.exception || m.params.exceptionDetails.text));
    });
    const call = (method, params = {}) => new Promise((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, (m) => (m.error ? reject(new Error(method + ': ' + m.error.message)) : resolve(m.result)));
      cdp.sendText(JSON.stringify({ id, method, params }));
    });
    const evaluate = async (expr) => {
      const r = await call('Runtime.evaluate', { expression: expr, returnByValue: true, awaitPromise: true });
      if (r.exceptionDetails) throw new Error('page: ' + JSON.stringify(r.exceptionDetails));
      return r.result.value;
    };
    await call('Runtime.enable');
    await call('Page.enable');
    await call('Page.navigate', { url: `http://127.0.0.1:${serverPort}/` });

    let st = null;
    while (Date.now() < deadline) {
      await sleep(500);
      try {
        st = await evaluate(`(() => { const m = window.mirage; return m ? { frames: m.frames, sent: m.sent,
          latency: document.getElementById('latency').textContent, fps: document.getElementById('fps').textContent,
          status: document.getElementById('status').textContent, prompts: document.getElementById('prompt').options.length,
          error: m.error, closed: m.closed } : null; })()`);
      } catch (e) { continue; }
      if (st && (st.error || st.closed)) break;
      if (st && st.frames >= 15 && /^\d+ ms$/.test(st.latency)) break;
    }
    // the prompt picker and the steps control: the server acknowledges the change, frames keep coming
    const want = await evaluate(`(() => { const sel = document.getElementById('prompt');
      sel.value = sel.options[sel.options.length - 1].value; sel.dispatchEvent(new Event('change'));
      const st = document.getElementById('steps'); st.value = 2; st.dispatchEvent(new Event('change'));
      return { prompt: sel.value, steps: 2, frames: window.mirage.frames }; })()`);
    let cfg = null;
    for (let i = 0; i < 40 && Date.now() < deadline; i++) {
      await sleep(250);
      cfg = await evaluate('({ config: window.mirage.config, frames: window.mirage.frames })');
      if (cfg.config && cfg.config.steps === 2 && cfg.config.prompt === want.prompt && cfg.frames >= want.frames + 5) break;
    }
    const pixels = await evaluate(`(() => {
      const stats = (id) => { const c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0, s = 0, s2 = 0, opaque = 0; for (let i = 0; i < d.length; i += 4) { opaque += d[i + 3] === 255;
          for (let k = 0; k < 3; k++) { s += d[i + k]; s2 += d[i + k] * d[i + k]; n++; } }
        const mean = s / n; return { w: c.width, h: c.height, mean, std: Math.sqrt(Math.max(0, s2 / n - mean * mean)),
          opaque: opaque / (d.length / 4) }; };
      const a = document.getElementById('input').getContext('2d'), b = document.getElementById('output').getContext('2d');
      const W = document.getElementById('input').width, H = document.getElementById('input').height;
      const da = a.getImageData(0, 0, W, H).data, db = b.getImageData(0, 0, W, H).data;
      let diff = 0; for (let i = 0; i < da.length; i += 4) for (let k = 0; k < 3; k++) diff += Math.abs(da[i + k] - db[i + k]);
      return { input: stats('input'), output: stats('output'), mean_abs_diff: diff / (W * H * 3) }; })()`);
    const shot = await call('Page.captureScreenshot', { format: 'png' });
    const shotPath = path.join(outDir, 'serve_browser.png');
    fs.writeFileSync(shotPath, Buffer.from(shot.data, 'base64'));
    const latMs = st && /^(\d+) ms$/.exec(st.latency) ? +/^(\d+) ms$/.exec(st.latency)[1] : null;
    const checks = {
      page_connected: !!st && !st.error && !st.closed,
      prompts_listed: !!st && st.prompts >= 2,
      frames_back: !!st && st.frames >= 15,
      latency_readout: latMs !== null && latMs > 0,
      camera_on_input_canvas: pixels.input.std > 10,
      output_drawn: pixels.output.opaque === 1, // a canvas nothing was drawn on is transparent
      output_not_flat: pixels.output.std > 1 && pixels.output.mean > 1,
      output_transformed: pixels.mean_abs_diff > 3,
      screenshot: fs.statSync(shotPath).size > 1000,
      controls_acknowledged: !!cfg && !!cfg.config && cfg.config.prompt === want.prompt && cfg.config.steps === 2,
      frames_after_change: !!cfg && cfg.frames >= want.frames + 5,
    };
    const ok = Object.values(checks).every(Boolean);
    console.log(JSON.stringify({ ok, checks, state: st, config: cfg && cfg.config, pixels, screenshot: shotPath, console: consoleLines.slice(-5) }));
    cdp.destroy();
    return ok;
  } finally {
    chrome.kill('SIGKILL');
    try { fs.rmSync(profile, { recursive: true, force: true }); } catch (e) { /* best effort */ }
  }
}

main().then((ok) => process.exit(ok ? 0 : 1), (e) => { console.log(JSON.stringify({ ok: false, error: String(e && e.stack || e) })); process.exit(1); });
