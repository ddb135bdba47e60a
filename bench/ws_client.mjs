#!/usr/bin/env node
// WebSocket load client for bench/ws_bench.py (Node.js + the `ws` package).
//
// Two modes; every phase is bounded in time, results are JSON lines on stdout.
//
//   node bench/ws_client.mjs rtt --url ws://127.0.0.1:PORT/ --connections 20 \
//        --size 65536 --duration 10 [--warmup 1]
//
//     Opens --connections WebSockets (permessage-deflate off); each sends a
//     binary message of --size bytes, waits for its echo, sends the next, for
//     --warmup + --duration seconds. Round trips that start after the warm-up
//     and end before the deadline are counted and timed. Every echo is checked
//     (length, and a sequence number in its first bytes). Then all sockets are
//     closed (1000) and one line is printed (before it, the lines
//     {"event":"measure_start"} and {"event":"measure_end"} mark the window):
//       {"event":"rtt","round_trips":N,"duration_s":S,"round_trips_per_sec":R,
//        "p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..,"errors":{...}}
//
//   node bench/ws_client.mjs idle --url ws://127.0.0.1:PORT/ --count N \
//        --sources 127.0.0.2,127.0.0.3 [--concurrency 64]
//
//     Opens --count WebSockets, spread round-robin over the --sources local
//     addresses (each socket binds one; the kernel gives each address its own
//     ~28k ephemeral ports), at most --concurrency handshakes in flight.
//     Prints {"event":"opened",...}, then obeys commands on stdin, one a line:
//       check K   K random open sockets each echo a 64 B message
//                 -> {"event":"checked",...}
//       close     close every socket (1000), wait for the closing handshakes
//                 -> {"event":"closed",...}, then exit
//     End of stdin acts as "close". --max-life bounds the whole process.

import process from 'node:process';
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import readline from 'node:readline';

const require = createRequire(import.meta.url);
let WebSocket;
try {
  WebSocket = require('ws');
} catch (err) {
  console.error(`ws_client: cannot load the 'ws' package (${err.code || err.message}); run: npm ci --prefix bench`);
  process.exit(2);
}

// ---------------------------------------------------------------------------
// arguments

const DEFAULTS = {
  url: '',
  connections: 20,
  size: 64,
  duration: 10,
  warmup: 1,
  count: 0,
  sources: '',
  concurrency: 64,
  'open-timeout': 30,
  'handshake-timeout': 15,
  'drain-timeout': 15,
  'close-timeout': 10,
  'check-timeout': 15,
  'max-life': 0,
};

function parseArgs(argv) {
  const mode = argv[0];
  if (mode !== 'rtt' && mode !== 'idle') fail(`first argument must be 'rtt' or 'idle', got ${mode}`, 2);
  const opts = { ...DEFAULTS, mode };
  for (let i = 1; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in DEFAULTS) || i + 1 >= argv.length) fail(`bad argument ${argv[i]}`, 2);
    const value = argv[i + 1];
    opts[key] = typeof DEFAULTS[key] === 'number' ? Number(value) : value;
    if (Number.isNaN(opts[key])) fail(`--${key}: not a number: ${value}`, 2);
  }
  if (!/^ws:\/\/127\.\d+\.\d+\.\d+:\d+\//.test(opts.url)) fail('--url must be ws://127.x.y.z:PORT/... (loopback only)', 2);
  return opts;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(message, code = 1) {
  emit({ event: 'error', error: message });
  console.error(`ws_client: ${message}`);
  process.exit(code);
}

const opts = parseArgs(process.argv.slice(2));

// A hard bound on the process's life, whatever happens.
const maxLife = opts['max-life'] > 0
  ? opts['max-life']
  : opts['open-timeout'] + opts.warmup + opts.duration + opts['drain-timeout'] + opts['close-timeout'] + 30;
setTimeout(() => fail(`gave up after --max-life ${maxLife} s`), maxLife * 1000).unref();

// ws masks and unmasks with the optional `bufferutil` native addon when it
// loads (about 3x the 1 MiB round trips of its pure-JS fallback here).
let nativeMasking = false;
try {
  nativeMasking = !process.env.WS_NO_BUFFER_UTIL
    && /\[native code\]/.test(String(require('bufferutil').mask));
} catch { /* not installed: ws uses its JS fallback */ }

const WS_OPTIONS = {
  perMessageDeflate: false,
  maxPayload: 256 * 1024 * 1024,
  handshakeTimeout: opts['handshake-timeout'] * 1000,
  skipUTF8Validation: true,
};

function countInto(map, key) {
  map[key] = (map[key] || 0) + 1;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Open one WebSocket; resolves to {ws} or {error}. Never rejects. */
function openOne(url, extra = {}) {
  return new Promise((resolve) => {
    let settled = false;
    const ws = new WebSocket(url, { ...WS_OPTIONS, ...extra });
    ws.binaryType = 'nodebuffer';
    const done = (result) => {
      if (!settled) { settled = true; resolve(result); }
    };
    ws.once('open', () => done({ ws }));
    ws.once('unexpected-response', (req, res) => {
      done({ error: `HTTP ${res.statusCode}` });
      req.destroy();
    });
    ws.on('error', (err) => done({ error: err.code || err.message }));
    ws.once('close', (code) => done({ error: `closed ${code} before open` }));
  });
}

/** Close every socket with 1000; resolves with counts once all are closed
 * or after the close timeout (the rest are terminated). */
function closeAll(sockets, timeoutS) {
  return new Promise((resolve) => {
    const result = { clean: 0, unclean: 0, forced: 0, codes: {} };
    let pending = 0;
    const finish = () => resolve(result);
    for (const ws of sockets) {
      if (ws.readyState === WebSocket.CLOSED) continue;
      pending += 1;
      ws.once('close', (code) => {
        countInto(result.codes, String(code));
        if (code === 1000) result.clean += 1; else result.unclean += 1;
        pending -= 1;
        if (pending === 0) { clearTimeout(timer); finish(); }
      });
      try { ws.close(1000, 'bench done'); } catch { /* already closing */ }
    }
    const timer = setTimeout(() => {
      for (const ws of sockets) {
        if (ws.readyState !== WebSocket.CLOSED) { result.forced += 1; ws.terminate(); }
      }
      finish();
    }, timeoutS * 1000);
    if (pending === 0) { clearTimeout(timer); finish(); }
  });
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

// ---------------------------------------------------------------------------
// rtt

async function runRtt() {
  const n = opts.connections;
  const size = opts.size;
  if (!(n >= 1) || !(size >= 1) || !(opts.duration > 0) || !(opts.warmup >= 0)) fail('need --connections >= 1, --size >= 1, --duration > 0', 2);

  const openDeadline = performance.now() + opts['open-timeout'] * 1000;
  const results = await Promise.race([
    Promise.all(Array.from({ length: n }, () => openOne(opts.url))),
    sleep(opts['open-timeout'] * 1000).then(() => null),
  ]);
  if (results === null || performance.now() > openDeadline) fail(`connections not open within ${opts['open-timeout']} s`);
  const failed = results.filter((r) => r.error);
  if (failed.length) {
    for (const r of results) r.ws?.terminate();
    const reasons = {};
    for (const r of failed) countInto(reasons, r.error);
    fail(`${failed.length}/${n} connections failed to open: ${JSON.stringify(reasons)}`);
  }
  const sockets = results.map((r) => r.ws);

  const errors = {};
  let lat = new Float64Array(1 << 16);
  let count = 0;
  let active = n;
  let resolveDone;
  const done = new Promise((resolve) => { resolveDone = resolve; });

  const t0 = performance.now();
  const measureFrom = t0 + opts.warmup * 1000;
  const measureTo = measureFrom + opts.duration * 1000;
  // This process's CPU use over the measured window (is the client busy?).
  let cpuFrom = null;
  let cpuPercent = null;
  // The window is announced on stdout so that the caller can sample the
  // servers' CPU use over the same seconds.
  setTimeout(() => {
    cpuFrom = process.cpuUsage();
    emit({ event: 'measure_start' });
  }, opts.warmup * 1000);
  setTimeout(() => {
    emit({ event: 'measure_end' });
    if (cpuFrom === null) return;
    const used = process.cpuUsage(cpuFrom);
    cpuPercent = ((used.user + used.system) / 1000) / (opts.duration * 1000) * 100;
  }, (opts.warmup + opts.duration) * 1000);

  const finishOne = (state) => {
    if (state.finished) return;
    state.finished = true;
    active -= 1;
    if (active === 0) resolveDone();
  };

  sockets.forEach((ws, index) => {
    const buf = Buffer.alloc(size, index & 0xff);
    const state = { seq: 0, sentAt: 0, finished: false };
    const send = () => {
      state.seq = (state.seq + 1) >>> 0;
      if (size >= 4) buf.writeUInt32BE(state.seq, 0);
      state.sentAt = performance.now();
      ws.send(buf, { binary: true }, (err) => {
        if (err) { countInto(errors, `send: ${err.code || err.message}`); finishOne(state); }
      });
    };
    ws.on('message', (data, isBinary) => {
      const now = performance.now();
      if (!isBinary || data.length !== size || (size >= 4 && data.readUInt32BE(0) !== state.seq)) {
        countInto(errors, 'bad echo');
        finishOne(state);
        return;
      }
      if (state.sentAt >= measureFrom && now <= measureTo) {
        if (count === lat.length) {
          const bigger = new Float64Array(lat.length * 2);
          bigger.set(lat);
          lat = bigger;
        }
        lat[count++] = now - state.sentAt;
      }
      if (now < measureTo && !state.finished) send(); else finishOne(state);
    });
    ws.on('close', (code) => {
      if (!state.finished) { countInto(errors, `closed ${code} during run`); finishOne(state); }
    });
    ws.on('error', (err) => countInto(errors, `error: ${err.code || err.message}`));
    send();
  });

  // Wait for the run, then for the echoes still in flight (bounded).
  const runMs = opts.warmup * 1000 + opts.duration * 1000;
  const drained = await Promise.race([
    done.then(() => true),
    sleep(runMs + opts['drain-timeout'] * 1000).then(() => false),
  ]);
  if (!drained) countInto(errors, `${active} connections still waiting for an echo ${opts['drain-timeout']} s after the end`);

  const closed = await closeAll(sockets, opts['close-timeout']);
  const sorted = lat.subarray(0, count).sort();
  const ms = (v) => (v === null ? null : Math.round(v * 1000) / 1000);
  let sum = 0;
  for (let i = 0; i < count; i++) sum += sorted[i];
  emit({
    event: 'rtt',
    url: opts.url,
    connections: n,
    size,
    native_masking: nativeMasking,
    round_trips: count,
    duration_s: opts.duration,
    round_trips_per_sec: count / opts.duration,
    mib_per_sec_each_way: (count * size) / opts.duration / 1048576,
    mean_ms: count ? ms(sum / count) : null,
    p50_ms: ms(percentile(sorted, 50)),
    p90_ms: ms(percentile(sorted, 90)),
    p99_ms: ms(percentile(sorted, 99)),
    max_ms: ms(count ? sorted[count - 1] : null),
    client_cpu_percent: cpuPercent === null ? null : Math.round(cpuPercent * 10) / 10,
    errors,
    close: closed,
  });
  process.exit(Object.keys(errors).length ? 1 : 0);
}

// ---------------------------------------------------------------------------
// idle

async function runIdle() {
  const total = opts.count;
  const sources = opts.sources ? opts.sources.split(',').filter(Boolean) : [];
  if (!(total >= 1)) fail('need --count >= 1', 2);
  if (sources.some((s) => !s.startsWith('127.'))) fail('--sources must be loopback addresses', 2);
  const concurrency = Math.max(1, Math.min(opts.concurrency, total));

  const sockets = [];
  const failures = {};
  let closedEarly = 0;
  const closedEarlyCodes = {};
  let next = 0;
  let failed = 0;
  const started = performance.now();
  const deadline = started + opts['open-timeout'] * 1000;
  let lastReport = started;

  const worker = async () => {
    while (next < total && performance.now() < deadline) {
      const i = next++;
      const extra = sources.length ? { localAddress: sources[i % sources.length] } : {};
      const r = await openOne(opts.url, extra);
      if (r.error) {
        failed += 1;
        countInto(failures, r.error);
        continue;
      }
      const ws = r.ws;
      ws.on('error', () => {});
      ws.on('close', (code) => {
        if (!ws.benchClosing) { closedEarly += 1; countInto(closedEarlyCodes, String(code)); }
      });
      sockets.push(ws);
      const now = performance.now();
      if (now - lastReport > 5000) {
        lastReport = now;
        console.error(`ws_client: ${sockets.length}/${total} open, ${failed} failed, ${((now - started) / 1000).toFixed(1)} s`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const openSeconds = (performance.now() - started) / 1000;
  emit({
    event: 'opened',
    requested: total,
    opened: sockets.length,
    failed,
    not_attempted: total - next,
    failures,
    seconds: Math.round(openSeconds * 1000) / 1000,
    sources,
  });

  let closing = false;
  const doClose = async () => {
    if (closing) return;
    closing = true;
    for (const ws of sockets) ws.benchClosing = true;
    const closed = await closeAll(sockets, opts['close-timeout']);
    emit({ event: 'closed', ...closed, closed_early: closedEarly });
    process.exit(0);
  };

  const doCheck = async (k) => {
    const open = sockets.filter((ws) => ws.readyState === WebSocket.OPEN);
    // A random sample without replacement (partial Fisher-Yates).
    const n = Math.min(k, open.length);
    for (let i = 0; i < n; i++) {
      const j = i + Math.floor(Math.random() * (open.length - i));
      [open[i], open[j]] = [open[j], open[i]];
    }
    const sample = open.slice(0, n);
    const outcomes = await Promise.all(sample.map((ws, idx) => new Promise((resolve) => {
      const payload = Buffer.alloc(64, 0x5a);
      payload.writeUInt32BE(idx, 0);
      const timer = setTimeout(() => { ws.off('message', onMessage); resolve('timeout'); }, opts['check-timeout'] * 1000);
      function onMessage(data) {
        clearTimeout(timer);
        ws.off('message', onMessage);
        resolve(Buffer.isBuffer(data) && data.equals(payload) ? 'ok' : 'bad echo');
      }
      ws.on('message', onMessage);
      ws.send(payload, { binary: true }, (err) => {
        if (err) { clearTimeout(timer); ws.off('message', onMessage); resolve(`send: ${err.code || err.message}`); }
      });
    })));
    const tally = {};
    for (const o of outcomes) countInto(tally, o);
    emit({
      event: 'checked',
      sampled: n,
      ok: tally.ok || 0,
      failed: n - (tally.ok || 0),
      outcomes: tally,
      still_open: sockets.filter((ws) => ws.readyState === WebSocket.OPEN).length,
      closed_early: closedEarly,
      closed_early_codes: closedEarlyCodes,
    });
  };

  const rl = readline.createInterface({ input: process.stdin });
  let busy = Promise.resolve();
  rl.on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    busy = busy.then(async () => {
      if (cmd === 'check') await doCheck(Number(arg) || 100);
      else if (cmd === 'close') await doClose();
      else if (cmd) emit({ event: 'error', error: `unknown command ${cmd}` });
    });
  });
  rl.on('close', () => { busy = busy.then(doClose); });
}

if (opts.mode === 'rtt') runRtt().catch((err) => fail(`rtt: ${err.stack || err}`));
else runIdle().catch((err) => fail(`idle: ${err.stack || err}`));
