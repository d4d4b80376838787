// mirage serve: the page. Camera frames go to the server as JPEG (wire format in docs/SERVE.md),
// transformed frames come back with the capture timestamp echoed, so FPS and end-to-end latency
// are measured here. Plain JS, no build step.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const video = $('camera'), inCanvas = $('input'), outCanvas = $('output');
  const inCtx = inCanvas.getContext('2d'), outCtx = outCanvas.getContext('2d');
  const state = window.mirage = {
    ws: null, hello: null, seq: 0, sent: 0, frames: 0, dropped: 0, latencies: [], arrivals: [],
    encoding: false, closed: null, error: null, lastLatency: null, config: null,
  };

  function status(text, isError) {
    const s = $('status');
    s.textContent = text;
    s.className = isError ? 'status error' : 'status';
    if (isError) state.error = text;
  }

  function median(a) {
    if (!a.length) return 0;
    const b = a.slice().sort((x, y) => x - y);
    return b[Math.floor((b.length - 1) / 2)];
  }

  // The camera picture, cropped to the session's aspect ratio and scaled to its size.
  function drawInput() {
    const vw = video.videoWidth, vh = video.videoHeight, W = inCanvas.width, H = inCanvas.height;
    if (!vw || !vh) return false;
    const s = Math.min(vw / W, vh / H), sw = W * s, sh = H * s;
    inCtx.drawImage(video, (vw - sw) / 2, (vh - sh) / 2, sw, sh, 0, 0, W, H);
    return true;
  }

  function sendFrame() {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !state.hello || state.encoding) return;
    // The server keeps only the newest frame anyway; do not queue more than a frame or two here.
    if (ws.bufferedAmount > 2 * inCanvas.width * inCanvas.height) return;
    const t = performance.now();
    if (!drawInput()) return;
    state.encoding = true;
    inCanvas.toBlob((blob) => {
      state.encoding = false;
      if (!blob || ws.readyState !== WebSocket.OPEN) return;
      blob.arrayBuffer().then((jpeg) => {
        const msg = new Uint8Array(20 + jpeg.byteLength), dv = new DataView(msg.buffer);
        msg.set([0x4d, 0x47, 0x46, 0x31]); // "MGF1"
        dv.setUint32(4, state.seq++ >>> 0, true);
        dv.setFloat64(8, t, true);
        dv.setUint16(16, inCanvas.width, true);
        dv.setUint16(18, inCanvas.height, true);
        msg.set(new Uint8Array(jpeg), 20);
        if (ws.readyState === WebSocket.OPEN) { ws.send(msg); state.sent++; }
      });
    }, 'image/jpeg', 0.8);
  }

  function onFrame(buf) {
    const dv = new DataView(buf);
    if (buf.byteLength < 32 || dv.getUint32(0, true) !== 0x314f474d) return; // "MGO1"
    const t = dv.getFloat64(8, true);
    state.dropped = dv.getUint32(28, true);
    createImageBitmap(new Blob([buf.slice(32)], { type: 'image/jpeg' })).then((bmp) => {
      outCtx.drawImage(bmp, 0, 0, outCanvas.width, outCanvas.height);
      bmp.close();
      const now = performance.now(), lat = now - t;
      state.frames++;
      state.lastLatency = lat;
      state.latencies.push(lat);
      if (state.latencies.length > 60) state.latencies.shift();
      state.arrivals.push(now);
      while (state.arrivals.length && state.arrivals[0] < now - 2000) state.arrivals.shift();
    }).catch(() => {});
  }

  function showReadouts() {
    const now = performance.now();
    const recent = state.arrivals.filter((a) => a >= now - 1000).length;
    $('fps').textContent = state.frames ? recent.toFixed(0) : '–';
    $('latency').textContent = state.latencies.length ? median(state.latencies).toFixed(0) + ' ms' : '–';
    $('frames').textContent = state.frames;
    $('dropped').textContent = state.dropped;
  }

  function sendConfig() {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const steps = parseInt($('steps').value, 10);
    const msg = { type: 'config', prompt: $('prompt').value };
    if (steps >= 1 && steps <= (state.hello ? state.hello.max_steps : 8)) msg.steps = steps;
    ws.send(JSON.stringify(msg));
  }

  function onHello(h) {
    state.hello = h;
    inCanvas.width = outCanvas.width = h.width;
    inCanvas.height = outCanvas.height = h.height;
    const sel = $('prompt');
    sel.innerHTML = '';
    for (const p of h.prompts) {
      const o = document.createElement('option');
      o.value = o.textContent = p;
      sel.appendChild(o);
    }
    sel.value = h.prompt;
    $('steps').max = h.max_steps;
    $('steps').value = h.steps;
    sel.disabled = $('steps').disabled = false;
    status('connected: session ' + h.session + ', model ' + h.model + ', ' + h.width + 'x' + h.height);
  }

  function connect() {
    if (state.ws) state.ws.close();
    state.hello = null;
    state.closed = null;
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    const ws = state.ws = new WebSocket(url, 'mirage');
    ws.binaryType = 'arraybuffer';
    status('connecting…');
    ws.onmessage = (e) => {
      if (typeof e.data !== 'string') return onFrame(e.data);
      let m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      if (m.type === 'hello') onHello(m);
      else if (m.type === 'config') { state.config = m; $('prompt').value = m.prompt; $('steps').value = m.steps; }
    };
    ws.onclose = (e) => {
      if (state.ws !== ws) return;
      state.closed = { code: e.code, reason: e.reason };
      $('prompt').disabled = $('steps').disabled = true;
      status('disconnected (' + e.code + (e.reason ? ': ' + e.reason : '') + ')', e.code !== 1000);
    };
    ws.onerror = () => status('connection error', true);
  }

  async function start() {
    $('prompt').onchange = sendConfig;
    $('steps').onchange = sendConfig;
    $('connect').onclick = connect;
    let fps = 30;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      status('no camera: browsers give a page the camera only on https:// or localhost (see docs/SERVE.md, Security)', true);
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
      video.srcObject = stream;
      await video.play();
      const s = stream.getVideoTracks()[0].getSettings();
      if (s.frameRate > 0) fps = Math.min(60, s.frameRate);
    } catch (err) {
      status('no camera: ' + err.message, true);
      return;
    }
    connect();
    setInterval(sendFrame, 1000 / fps);
    setInterval(showReadouts, 250);
  }

  start();
})();
