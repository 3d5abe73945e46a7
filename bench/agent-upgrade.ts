/**
 * Agent upgrade bench (issue 14): a node's agent is replaced under a keep-alive HTTP load, as
 * `sockmesh restart-agent` does it (the new agent takes the listening sockets over, the old one
 * drains). Per round: time from the new agent's start to serving, requests and connections that
 * failed (0 expected), RSS of old + new while both run, how long the old one drained. Then one
 * kill -9 for comparison: the failure window a client sees until the replacement serves.
 *
 *   node --import tsx bench/agent-upgrade.ts [--rounds N] [--requests N]
 *
 * Writes bench/results/agent-upgrade.{json,md}. Root only (namespaces, cgroups, BPF).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { replaceAgent, waitExit } from '../lab/agent-restart.js';
import { agentsFrom, LocalMesh } from '../lab/mesh.js';
import { memoryMiB } from './lib/proc.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..');
const FIXTURES = join(REPO, 'test', 'fixtures');
const { values } = parseArgs({
  options: { rounds: { type: 'string' }, requests: { type: 'string' }, 'drain-timeout': { type: 'string' } },
});
const ROUNDS = Number(values.rounds ?? 3);
const REQUESTS = Number(values.requests ?? 20_000);
const DRAIN_S = Number(values['drain-timeout'] ?? 30);
const URL_ = 'http://reviews.shop.svc.cluster.local:9080/';

interface Round {
  servingMs: number;
  servingAfterMs: number | undefined;
  requests: number;
  failed: number;
  errors: Record<string, number>;
  overlapRssMiB: { old: number; new: number; sum: number };
  oldExitMs: number;
  p99Ms: number;
}

function log(s: string): void {
  process.stderr.write(`[agent-upgrade] ${s}\n`);
}

/** Samples RSS of both processes every 50 ms while both live; returns the peak of the sum. */
function sampleOverlap(oldPid: () => number | undefined, newPid: () => number | undefined) {
  const peak = { old: 0, new: 0, sum: 0 };
  const t = setInterval(() => {
    const o = oldPid();
    const n = newPid();
    if (o === undefined || n === undefined) return;
    const a = memoryMiB(o).rss;
    const b = memoryMiB(n).rss;
    if (a > 0 && b > 0 && a + b > peak.sum) Object.assign(peak, { old: a, new: b, sum: a + b });
  }, 50);
  return { stop: () => clearInterval(t), peak };
}

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  const mesh = await LocalMesh.start({
    manifestsDir: join(REPO, 'examples', 'shop'),
    agentWorkers: 1,
    agentArgs: ['--drain-timeout', String(DRAIN_S)],
  });
  const rounds: Round[] = [];
  let crash: Record<string, unknown> | undefined;
  try {
    for (let i = 0; i < ROUNDS; i++) {
      const before = JSON.parse((await mesh.agentGet('node1', '/stats/config')).body) as {
        handoff: { pid: number };
      };
      let newPid: number | undefined;
      const oldPid = before.handoff.pid;
      const sampler = sampleOverlap(
        () => oldPid,
        () => newPid,
      );
      const loading = mesh.exec(
        'shop/frontend-1',
        [process.execPath, join(FIXTURES, 'http-load.mjs'), URL_, String(REQUESTS), '16'],
        300_000,
      );
      await new Promise((r) => setTimeout(r, 300));
      const r = await replaceAgent(mesh, 'node1', {
        onSpawn: (pid) => {
          newPid = pid;
        },
      });
      const t0 = performance.now();
      const res = await loading;
      const exited = await waitExit(r.oldPid, (DRAIN_S + 15) * 1000);
      const oldExitMs = exited ? Math.round(performance.now() - t0) : -1;
      sampler.stop();
      const summary = JSON.parse(res.stdout) as {
        byStatus: Record<string, number>;
        errors: Record<string, number>;
        p99: number;
      };
      const ok = summary.byStatus['200'] ?? 0;
      rounds.push({
        servingMs: r.servingMs,
        servingAfterMs: r.servingAfterMs,
        requests: REQUESTS,
        failed: REQUESTS - ok,
        errors: summary.errors,
        overlapRssMiB: {
          old: round1(sampler.peak.old),
          new: round1(sampler.peak.new),
          sum: round1(sampler.peak.sum),
        },
        oldExitMs,
        p99Ms: summary.p99,
      });
      log(`round ${i + 1}: ${JSON.stringify(rounds.at(-1))}`);
    }
    // A crash for comparison: the probe sends one request every 20 ms over one keep-alive connection.
    const probe = mesh.exec(
      'shop/frontend-1',
      [process.execPath, join(FIXTURES, 'http-probe.mjs'), URL_, '10000', '20'],
      60_000,
    );
    await new Promise((r) => setTimeout(r, 1500));
    const r = await replaceAgent(mesh, 'node1', { mode: 'crash' });
    const p = JSON.parse((await probe).stdout) as Record<string, unknown>;
    crash = { servingMs: r.servingMs, servingAfterMs: r.servingAfterMs, ...p };
    log(`kill -9: ${JSON.stringify(crash)}`);
  } finally {
    await mesh.stop();
  }
  const report = {
    command: `node --import tsx bench/agent-upgrade.ts --rounds ${ROUNDS} --requests ${REQUESTS}`,
    startedAt,
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version },
    agentsFrom: agentsFrom(),
    drainTimeoutS: DRAIN_S,
    rounds,
    crash,
  };
  mkdirSync(join(HERE, 'results'), { recursive: true });
  writeFileSync(join(HERE, 'results', 'agent-upgrade.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(HERE, 'results', 'agent-upgrade.md'), markdown(report));
  process.stdout.write(markdown(report));
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

function markdown(r: {
  command: string;
  startedAt: string;
  drainTimeoutS: number;
  rounds: Round[];
  crash: Record<string, unknown> | undefined;
}): string {
  const lines = [
    `# Agent upgrade (${r.startedAt})`,
    '',
    `\`${r.command}\`; drain bound ${r.drainTimeoutS} s; ${REQUESTS} keep-alive requests (16 connections) from shop/frontend-1 while node1's agent is replaced.`,
    '',
    '| round | start to serving ms (spawn / own clock) | requests failed | errors | RSS old + new during overlap MiB | old agent gone, ms after the new one served (checked once the load ended: an upper bound) | load p99 ms |',
    '| ---: | ---: | ---: | --- | ---: | ---: | ---: |',
    ...r.rounds.map(
      (x, i) =>
        `| ${i + 1} | ${x.servingMs} / ${x.servingAfterMs ?? '-'} | ${x.failed} | ${JSON.stringify(x.errors)} | ${x.overlapRssMiB.old} + ${x.overlapRssMiB.new} = ${x.overlapRssMiB.sum} | ${x.oldExitMs} | ${x.p99Ms} |`,
    ),
    '',
  ];
  if (r.crash) {
    lines.push(
      `kill -9 instead: the new agent served ${r.crash.servingMs} ms after its start (own clock ${r.crash.servingAfterMs} ms); a client sending every 20 ms saw a failure window of ${r.crash.windowMs} ms (${r.crash.failed}/${r.crash.total} requests failed: ${JSON.stringify(r.crash.errors)}).`,
      '',
    );
  }
  return `${lines.join('\n')}\n`;
}

await main();
