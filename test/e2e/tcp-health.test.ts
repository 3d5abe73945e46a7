/**
 * Kernel TCP health in the running mesh: the shop on two nodes, loss injected
 * on the underlay link for the tunnel session of one workload pair
 * (frontend-1 -> reviews-v2-1) and not for another on the same link
 * (frontend-1 -> ratings-1). The caller's agent must report retransmits for
 * the lossy pair only, under the mesh's workload labels.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { LocalMesh } from '../../lab/mesh.js';
import type { LabNode } from '../../lab/types.js';
import type { TcpHealthReport } from '../../mesh-agent/telemetry/tcp-health.js';
import { LossInjector } from '../helpers/loss.js';
import { call, load, metric, startShop } from '../helpers/mesh.js';

const REVIEWS_V2 = 'http://reviews-v2.shop.svc.cluster.local:9080/';
const REVIEWS_V1 = 'http://reviews-v1.shop.svc.cluster.local:9080/';
const RATINGS = 'http://ratings.shop.svc.cluster.local:9080/';

describe('kernel TCP health per workload pair (2 nodes, loss on the underlay)', () => {
  let mesh: LocalMesh;
  let loss: LossInjector | undefined;
  let node1: LabNode;
  let node2: LabNode;

  /** Local ports of node1's tunnel connections to node2 (one per identity pair). */
  const tunnelPorts = async (): Promise<Set<number>> => {
    const r = await mesh.bed.exec(node1, [
      'ss',
      '-Htn',
      'state',
      'established',
      'dst',
      `${node2.underlayIp}:15008`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    return new Set(
      r.stdout
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[2])
        .filter((local): local is string => !!local)
        .map((local) => Number(local.slice(local.lastIndexOf(':') + 1))),
    );
  };
  const labels = (leg: string, dst: string) => ({
    leg,
    source_workload: 'frontend-1',
    source_namespace: 'shop',
    destination_workload: dst,
    destination_namespace: 'shop',
  });

  before(async () => {
    mesh = await startShop();
    node1 = mesh.bed.nodes.find((n) => n.name === 'node1')!;
    node2 = mesh.bed.nodes.find((n) => n.name === 'node2')!;
    loss = LossInjector.attach({
      pinDir: join(mesh.bed.bpffsRoot, 'loss'),
      netns: node2.netns,
      dev: 'eth0',
      direction: 'ingress',
    });
  });

  after(async () => {
    loss?.close();
    await mesh?.stop();
  });

  it('raises the retransmits of the lossy pair only, with the workload labels', async (t) => {
    // The clean pair's tunnel session first, then the lossy pair's: the new port is the lossy one.
    assert.equal((await call(mesh, 'shop/frontend-1', RATINGS)).status, 200);
    const clean = await tunnelPorts();
    assert.equal((await call(mesh, 'shop/frontend-1', REVIEWS_V2)).status, 200);
    const lossy = [...(await tunnelPorts())].filter((p) => !clean.has(p));
    assert.equal(lossy.length, 1, `one new tunnel session expected, got ${JSON.stringify(lossy)}`);

    // 10% of the session's packets: HTTP/2 packs many requests per segment, so there are few.
    loss!.set(lossy[0]!, 100);
    let counters: { seen: bigint; dropped: bigint };
    try {
      const [v2, ratings] = await Promise.all([
        load(mesh, 'shop/frontend-1', REVIEWS_V2, 400, 4),
        load(mesh, 'shop/frontend-1', RATINGS, 400, 4),
      ]);
      assert.equal(v2.byStatus['200'], 400, JSON.stringify(v2));
      assert.equal(ratings.byStatus['200'], 400, JSON.stringify(ratings));
    } finally {
      counters = loss!.counters();
      loss!.set(0, 0);
    }
    assert.ok(counters.dropped > 0n, `the injector dropped nothing (saw ${counters.seen})`);

    const text = (await mesh.agentGet('node1', '/metrics')).body;
    const retrans = (dst: string) =>
      metric(text, 'sockmesh_tcp_health_retransmits_total', labels('tunnel', dst));
    const lossyRetrans = retrans('reviews-v2-1');
    const cleanRetrans = retrans('ratings-1');
    t.diagnostic(
      `retransmits: lossy ${lossyRetrans}, clean ${cleanRetrans}; ${counters.dropped} of ${counters.seen} dropped`,
    );
    assert.ok(
      lossyRetrans >= 10,
      `lossy pair retransmitted ${lossyRetrans} segments (${counters.dropped} dropped)`,
    );
    // ~0, not 0: on a loaded machine a tail loss probe can fire before a late ACK (a spurious retransmit).
    assert.ok(
      cleanRetrans <= 2 && cleanRetrans * 4 <= lossyRetrans,
      `the clean pair on the same link retransmitted ${cleanRetrans} segments (lossy: ${lossyRetrans})`,
    );
    for (const dst of ['reviews-v2-1', 'ratings-1']) {
      assert.ok(
        metric(text, 'sockmesh_tcp_health_connections_total', labels('tunnel', dst)) >= 1,
        `no tunnel connection counted for frontend-1 -> ${dst}`,
      );
      assert.ok(metric(text, 'sockmesh_tcp_health_rtt_samples_total', labels('tunnel', dst)) > 0);
      assert.ok(metric(text, 'sockmesh_tcp_health_srtt_microseconds', labels('tunnel', dst)) > 0);
    }
  });

  it('measures the node-local legs and serves the pairs as JSON', async () => {
    // Three callers' connections, one pooled upstream connection: each captured connection is counted.
    for (let i = 0; i < 3; i++) assert.equal((await call(mesh, 'shop/frontend-1', REVIEWS_V1)).status, 200);
    const report = JSON.parse((await mesh.agentGet('node1', '/stats/tcp')).body) as TcpHealthReport;
    assert.equal(report.measured, true);
    const find = (leg: string, dst: string) =>
      report.pairs.find(
        (p) => p.leg === leg && p.source?.workload === 'frontend-1' && p.destination?.workload === dst,
      );
    // proxy -> reviews-v1-1 on node1, and frontend-1's captured connection to the proxy.
    assert.ok(find('proxy_pod', 'reviews-v1-1')?.connections, JSON.stringify(report.pairs));
    assert.equal(find('pod_proxy', 'reviews-v1-1')?.connections, 3, JSON.stringify(report.pairs));
    assert.ok(find('tunnel', 'reviews-v2-1'), JSON.stringify(report.pairs));
    // node2 measures its own delivery of the tunnelled connections, with the caller from the tunnel's baggage.
    const node2Report = JSON.parse((await mesh.agentGet('node2', '/stats/tcp')).body) as TcpHealthReport;
    const delivered = node2Report.pairs.filter(
      (p) => p.leg === 'proxy_pod' && p.source?.namespace === 'shop' && p.source.workload === 'frontend-1',
    );
    assert.deepEqual(
      delivered.map((p) => p.destination?.workload).sort(),
      ['ratings-1', 'reviews-v2-1'],
      JSON.stringify(node2Report.pairs),
    );
    const status = JSON.parse((await mesh.agentGet('node1', '/stats/config')).body) as {
      tcpHealth: TcpHealthReport;
    };
    assert.equal(status.tcpHealth.measured, true);
    assert.ok(status.tcpHealth.pairs.length >= 3);
  });
});
