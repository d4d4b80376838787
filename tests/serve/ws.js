// A minimal WebSocket client (RFC 6455) for the serve tests: Node 18/20 has none built in, and the
// abuse cases need to write broken frames on purpose, which no well-behaved library allows.
'use strict';
const net = require('net');
const crypto = require('crypto');
const { EventEmitter } = require('events');

class Client extends EventEmitter {
  constructor(sock) {
    super();
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.frag = null; // { opcode, parts }
    this.closeInfo = null;
    this.closed = new Promise((resolve) => { this._resolveClosed = resolve; });
    sock.on('data', (d) => this._data(d));
    sock.on('error', () => {});
    sock.on('close', () => this._finish(1006, ''));
  }
  _finish(code, reason) {
    if (!this.closeInfo) {
      this.closeInfo = { code, reason };
      this.emit('close', this.closeInfo);
      this._resolveClosed(this.closeInfo);
    }
    this.sock.destroy();
  }
  _data(d) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      const fin = (b[0] & 0x80) !== 0, op = b[0] & 0x0f, masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f, at = 2;
      if (len === 126) { if (b.length < 4) return; len = b.readUInt16BE(2); at = 4; }
      else if (len === 127) { if (b.length < 10) return; len = Number(b.readBigUInt64BE(2)); at = 10; }
      if (masked) at += 4; // servers do not mask; tolerated
      if (b.length < at + len) return;
      const payload = b.subarray(at, at + len);
      this.buf = b.subarray(at + len);
      this._frame(fin, op, Buffer.from(payload));
    }
  }
  _frame(fin, op, payload) {
    if (op === 8) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      const reason = payload.length > 2 ? payload.subarray(2).toString('utf8') : '';
      try { this.sock.write(this._encode(8, payload.subarray(0, 2), true)); } catch (e) { /* gone */ }
      this._finish(code, reason);
      return;
    }
    if (op === 9) { this.sendFrame(10, payload); return; }
    if (op === 10) return;
    if (op === 0 && this.frag) this.frag.parts.push(payload);
    else this.frag = { opcode: op, parts: [payload] };
    if (!fin) return;
    const msg = Buffer.concat(this.frag.parts), opcode = this.frag.opcode;
    this.frag = null;
    if (opcode === 1) this.emit('text', msg.toString('utf8'));
    else this.emit('binary', msg);
  }
  _encode(op, payload, fin = true) {
    const n = payload.length;
    const hdr = n < 126 ? Buffer.alloc(2) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
    hdr[0] = (fin ? 0x80 : 0) | op;
    if (n < 126) hdr[1] = 0x80 | n;
    else if (n < 65536) { hdr[1] = 0x80 | 126; hdr.writeUInt16BE(n, 2); }
    else { hdr[1] = 0x80 | 127; hdr.writeBigUInt64BE(BigInt(n), 2); }
    const mask = crypto.randomBytes(4), body = Buffer.alloc(n);
    for (let i = 0; i < n; i++) body[i] = payload[i] ^ mask[i & 3];
    return Buffer.concat([hdr, mask, body]);
  }
  sendFrame(op, payload, fin = true) {
    if (this.closeInfo || this.sock.destroyed) return false;
    return this.sock.write(this._encode(op, payload, fin));
  }
  sendBinary(buf) { return this.sendFrame(2, buf); }
  sendText(s) { return this.sendFrame(1, Buffer.from(s, 'utf8')); }
  raw(bytes) { if (!this.sock.destroyed) this.sock.write(bytes); }
  close(code = 1000) { const p = Buffer.alloc(2); p.writeUInt16BE(code, 0); this.sendFrame(8, p); }
  destroy() { this._finish(1006, 'destroyed'); }
}

// Connects and completes the handshake; resolves to a Client, rejects on refusal.
function connect(port, opts = {}) {
  const path = opts.path || '/ws', host = opts.host || '127.0.0.1';
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host);
    const key = crypto.randomBytes(16).toString('base64');
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('handshake timeout')); }, opts.timeout || 10000);
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    sock.on('connect', () => {
      sock.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
        (opts.protocol === null ? '' : `Sec-WebSocket-Protocol: ${opts.protocol || 'mirage'}\r\n`) + '\r\n');
    });
    const onData = (d) => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      sock.removeListener('data', onData);
      const status = head.subarray(0, end).toString().split('\r\n')[0];
      if (!/^HTTP\/1\.1 101/.test(status)) { sock.destroy(); reject(new Error('handshake refused: ' + status)); return; }
      const c = new Client(sock);
      resolve(c);
      const rest = head.subarray(end + 4);
      if (rest.length) setImmediate(() => c._data(rest)); // after the caller attached its listeners
    };
    sock.on('data', onData);
  });
}

// A frame message (docs/SERVE.md): "MGF1", seq, t, width, height, then the JPEG.
function frameMessage(seq, t, w, h, jpeg) {
  const hdr = Buffer.alloc(20);
  hdr.write('MGF1', 0, 'latin1');
  hdr.writeUInt32LE(seq >>> 0, 4);
  hdr.writeDoubleLE(t, 8);
  hdr.writeUInt16LE(w, 16);
  hdr.writeUInt16LE(h, 18);
  return Buffer.concat([hdr, jpeg]);
}

function parseOutput(buf) {
  if (buf.length < 32 || buf.toString('latin1', 0, 4) !== 'MGO1') return null;
  return {
    seq: buf.readUInt32LE(4), t: buf.readDoubleLE(8), serverMs: buf.readFloatLE(16), modelMs: buf.readFloatLE(20),
    width: buf.readUInt16LE(24), height: buf.readUInt16LE(26), dropped: buf.readUInt32LE(28), jpeg: buf.subarray(32),
  };
}

// The size of a baseline/progressive JPEG from its SOF marker (null if none found).
function jpegSize(b) {
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return null;
    const m = b[i + 1], len = b.readUInt16BE(i + 2);
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc)
      return { height: b.readUInt16BE(i + 5), width: b.readUInt16BE(i + 7) };
    i += 2 + len;
  }
  return null;
}

module.exports = { connect, frameMessage, parseOutput, jpegSize };
