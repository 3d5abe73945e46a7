#!/usr/bin/env node
// Waits until every probe passes (HTTP 200, TCP connect, file exists), or fails after the deadline.
// Runs inside a node or host namespace: usage: probe.mjs <timeoutMs> '<json probes>'
import { existsSync } from 'node:fs';
import net from 'node:net';

const deadline = Date.now() + Number(process.argv[2]);
const probes = JSON.parse(process.argv[3]);

function tcp(host, port) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.setTimeout(500);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

async function check(p) {
  if (p.kind === 'file') return existsSync(p.path);
  if (p.kind === 'tcp') return tcp(p.host, p.port);
  try {
    const res = await fetch(p.url, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

let pending = probes;
while (pending.length > 0) {
  const results = await Promise.all(pending.map(check));
  pending = pending.filter((_, i) => !results[i]);
  if (pending.length === 0) break;
  if (Date.now() > deadline) {
    process.stderr.write(
      `still waiting for: ${pending.map((p) => p.url ?? p.path ?? `${p.host}:${p.port}`).join(', ')}\n`,
    );
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 100));
}
