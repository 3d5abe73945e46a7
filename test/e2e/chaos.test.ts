/**
 * Chaos under load (issue 17, part 5), the short run: keep-alive HTTP and one long-lived gRPC channel
 * from the frontend pod to reviews (both versions, across nodes through the mTLS tunnel) while the
 * control plane is killed and restarted, SVIDs rotate every 5 s (the whole file), weights change every
 * second, and 10 000 connections are held through the agent. The design promises that none of these
 * fails a request. scripts/chaos/run.ts runs the full numbers (20 000 requests each, also on
 * Kubernetes, and the agent kill -9 the design does not survive yet).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  applyRoutes,
  controlPlaneKill,
  manyConnections,
  raiseNofile,
  type ScenarioResult,
  svidRotation,
  weightFlips,
} from '../../lab/chaos.js';
import type { LocalMesh } from '../../lab/mesh.js';
import { leftovers } from '../helpers/lab.js';
import { startShop } from '../helpers/mesh.js';

// The reviews versions as gRPC backends, so a weight change moves the gRPC calls too.
const OPEN = fileURLToPath(new URL('./manifests-open/', import.meta.url));
const notRoot = typeof process.getuid === 'function' && process.getuid() !== 0;

function summary(r: ScenarioResult): string {
  return `${r.name}: ${r.failed}/${r.requests} failed ${JSON.stringify(r.errors)}, versions ${JSON.stringify(r.versions)}, ${r.durationMs} ms; agent RSS peak ${JSON.stringify(r.memory.agentsPeakMiB)} MiB, control plane ${r.memory.controlPlanePeakMiB} MiB; ${JSON.stringify(r.details)}`;
}

function assertNoneFailed(r: ScenarioResult, requests: number): void {
  assert.equal(r.requests, requests, 'every request of the load ran');
  assert.deepEqual(r.firstFailures, [], `${r.failed} of ${r.requests} failed: ${JSON.stringify(r.errors)}`);
  assert.equal(r.failed, 0);
  assert.ok((r.versions.v1 ?? 0) > 0 && (r.versions.v2 ?? 0) > 0, 'both versions answered (v2 across nodes)');
}

describe('chaos under keep-alive and gRPC load (2 nodes, real BPF, mTLS, xDS)', {
  skip: notRoot ? 'needs root (netns, cgroups, BPF)' : false,
  timeout: 600_000,
}, () => {
  let mesh: LocalMesh | undefined;

  before(async () => {
    // 10 000 connections: the agents (started from here) hold both ends of each.
    assert.ok(raiseNofile() >= 20_000, 'the hard limit on open files allows 10 000 connections');
    mesh = await startShop([OPEN], { agentWorkers: 1, svidTtlSeconds: 10 });
    applyRoutes(mesh, 50, 50);
  });

  after(async () => {
    if (!mesh) return;
    const bed = mesh.bed;
    await mesh.stop();
    assert.deepEqual(leftovers(bed), [], 'nothing of the lab is left');
  });

  it('control plane kill -9 and restart: agents serve their last config, reconnect to ADS, 0 failed', async (t) => {
    const r = await controlPlaneKill(mesh!, { total: 3000, modes: ['keepalive', 'grpc'], rate: 300 });
    t.diagnostic(summary(r));
    assertNoneFailed(r, 3000);
    const cycles = r.details.cycles as { servedWhileDown: boolean; reconnectMs: number }[];
    assert.equal(cycles.length, 1);
    assert.ok(
      cycles[0]!.servedWhileDown,
      'the agent answered (not connected to ADS) while the control plane was down',
    );
    assert.equal(r.grpcReconnects, 0, 'the gRPC channel never dropped');
  });

  it('SVIDs rotating every 5 s under load: 0 failed', async (t) => {
    const r = await svidRotation(mesh!, { total: 3600, modes: ['keepalive', 'grpc'], rate: 240 });
    t.diagnostic(summary(r));
    assertNoneFailed(r, 3600);
    assert.ok(
      (r.details.rotations as number) >= 2,
      `the caller's SVID rotated at least twice: ${JSON.stringify(r.details)}`,
    );
  });

  it('weights changed every second under load: 0 failed', async (t) => {
    const r = await weightFlips(mesh!, { total: 3000, modes: ['keepalive', 'grpc'], rate: 300 });
    t.diagnostic(summary(r));
    assertNoneFailed(r, 3000);
    assert.ok(
      (r.details.changes as number) >= 5,
      `the weights changed several times: ${JSON.stringify(r.details)}`,
    );
  });

  it('10 000 concurrent keep-alive connections through the agent, two requests each: all held, 0 failed', async (t) => {
    const r = await manyConnections(mesh!, {
      total: 20_000,
      modes: ['connections'],
      connections: 10_000,
      workers: 64,
    });
    t.diagnostic(summary(r));
    assertNoneFailed(r, 20_000);
    const c = r.details.connections as { peakOpen: number; openAtEnd: number };
    assert.equal(c.peakOpen, 10_000, 'all 10 000 connections were open at once');
    assert.equal(c.openAtEnd, 10_000, 'and still open after their requests');
  });
});
