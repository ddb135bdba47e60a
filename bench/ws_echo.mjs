#!/usr/bin/env node
// WebSocket echo backend for bench/ws_bench.py (Node.js + the `ws` package).
//
//   node bench/ws_echo.mjs --host 127.0.0.1 --port 40001[,40002,...]
//
// Every message is sent back as it came (binary stays binary, text stays
// text); permessage-deflate is off (unmasking uses the `bufferutil` addon
// when installed, as `ws` does). A plain HTTP GET (no Upgrade) answers
// 200 "ok\n", so health probes and readiness checks see a healthy member.
// With several ports (a comma list), one WebSocket server serves them all:
// a gateway can then spread more than ~28k backend connections over several
// destination ports. Prints one line "listening <host> <ports>" when ready;
// stops on SIGTERM/SIGINT (closing its connections with 1001), forcibly
// after 3 s.

import http from 'node:http';
import process from 'node:process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let WebSocketServer;
try {
  ({ WebSocketServer } = require('ws'));
} catch (err) {
  console.error(`ws_echo: cannot load the 'ws' package (${err.code || err.message}); run: npm ci --prefix bench`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', ports: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = argv[i + 1];
    if (arg === '--host') { opts.host = value; i++; }
    else if (arg === '--port') { opts.ports = value.split(',').map(Number); i++; }
    else { console.error(`ws_echo: unknown argument ${arg}`); process.exit(2); }
  }
  if (!opts.ports.length || opts.ports.some((p) => !Number.isInteger(p) || p <= 0 || p > 65535)) {
    console.error('ws_echo: --port PORT[,PORT...] is required');
    process.exit(2);
  }
  if (!opts.host.startsWith('127.')) {
    console.error('ws_echo: loopback addresses (127.0.0.0/8) only');
    process.exit(2);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  maxPayload: 256 * 1024 * 1024,
  clientTracking: true,
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  ws.on('error', () => {}); // a peer that vanishes is not our problem
});

const servers = [];
let listening = 0;

for (const port of opts.ports) {
  const server = http.createServer((req, res) => {
    const body = 'ok\n';
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  });
  server.keepAliveTimeout = 60_000;
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  server.on('error', (err) => {
    console.error(`ws_echo: ${opts.host}:${port}: ${err.message}`);
    process.exit(1);
  });
  server.listen({ host: opts.host, port, backlog: 4096 }, () => {
    listening += 1;
    if (listening === opts.ports.length) {
      console.log(`listening ${opts.host} ${opts.ports.join(',')}`);
    }
  });
  servers.push(server);
}

function stop() {
  for (const ws of wss.clients) ws.close(1001, 'backend stopping');
  for (const server of servers) {
    server.close();
    server.closeAllConnections?.();
  }
  setTimeout(() => process.exit(0), 3000).unref();
  // Exit as soon as the close handshakes are done.
  const poll = setInterval(() => {
    if (wss.clients.size === 0) process.exit(0);
  }, 50);
  poll.unref();
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
