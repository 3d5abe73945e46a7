// Contract with the control plane: the resources its golden translation tests
// produce (test/golden/xds/<case>/expected.json, already round-tripped through
// the real Envoy protos) must load into MeshState without a warning, and every
// Service VIP:port, route and inbound pod chain in them must resolve.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Authorizer } from '../../../mesh-agent/authz/index.js';
import { chooseCluster, pickWeightedCluster, selectRoute } from '../../../mesh-agent/routing/index.js';
import { MeshState } from '../../../mesh-agent/state/index.js';
import { seeded } from './fixtures/rng.js';

const GOLDEN = path.resolve(import.meta.dirname, '../../golden/xds');

interface Golden {
  listeners: unknown[];
  routes: unknown[];
  clusters: unknown[];
  endpoints: unknown[];
  apiListeners?: Record<string, unknown>;
}

interface ChainShape {
  name?: string;
  filter_chain_match?: {
    destination_port?: { value: number };
    prefix_ranges?: Array<{ address_prefix: string }>;
  };
}

const cases = existsSync(GOLDEN)
  ? readdirSync(GOLDEN).filter((d) => existsSync(path.join(GOLDEN, d, 'expected.json')))
  : [];

describe('control plane golden output loads into MeshState', () => {
  it('there are golden cases to check', () => assert.ok(cases.length > 0));

  for (const name of cases) {
    it(name, () => {
      const g = JSON.parse(readFileSync(path.join(GOLDEN, name, 'expected.json'), 'utf8')) as Golden;
      const api = Object.values(g.apiListeners ?? {}).filter((l) => l !== null);
      const state = MeshState.fromSnapshot({ ...g, listeners: [...g.listeners, ...api] });
      assert.deepEqual(state.warnings, []);
      for (const l of g.listeners as Array<{ name: string; filter_chains?: ChainShape[] }>) {
        for (const c of l.filter_chains ?? []) {
          const ip = c.filter_chain_match?.prefix_ranges?.[0]?.address_prefix;
          const port = c.filter_chain_match?.destination_port?.value;
          if (ip === undefined) continue;
          if (port === undefined) {
            // Inbound: one chain per local pod, whatever the port.
            assert.equal(state.matchInbound(ip, 12345).chain?.name, c.name);
            continue;
          }
          const m = state.matchOutbound(ip, port);
          assert.ok(m.kind === 'http' || m.kind === 'tcp', `${ip}:${port} -> ${m.kind}`);
          if (m.kind === 'tcp') {
            assert.ok(state.cluster(chooseCluster(m.tcpProxy.target).name), `${ip}:${port} cluster`);
            continue;
          }
          for (const path of ['/', '/reviews/1', '/api?x=1']) {
            const d = selectRoute(m.routeConfig, {
              authority: `${ip}:${port}`,
              path,
              method: 'GET',
              headers: {},
            });
            if (d.kind !== 'forward') continue;
            const cluster = chooseCluster(d.action.target).name;
            assert.ok(state.cluster(cluster), `route to unknown cluster ${cluster}`);
          }
        }
      }
      // Unknown destinations pass through to the ORIGINAL_DST cluster.
      assert.deepEqual(state.matchOutbound('203.0.113.1', 443), {
        kind: 'passthrough',
        reason: 'original-dst-cluster',
      });
    });
  }

  it('basic: a port that declares no protocol is TCP with an HTTP chain for when HTTP is detected', {
    skip: !cases.includes('basic'),
  }, () => {
    const g = JSON.parse(readFileSync(path.join(GOLDEN, 'basic', 'expected.json'), 'utf8')) as Golden;
    const state = MeshState.fromSnapshot(g);
    // db:5432 has neither a name nor an appProtocol.
    const db = state.matchOutbound('10.96.0.20', 5432);
    assert.ok(db.kind === 'tcp' && db.detectHttp?.routeConfigName === 'db.shop.svc.cluster.local:5432');
    // Declared ports are never sniffed.
    for (const c of g.listeners.flatMap((l) => (l as { filter_chains?: ChainShape[] }).filter_chains ?? [])) {
      const ip = c.filter_chain_match?.prefix_ranges?.[0]?.address_prefix;
      const port = c.filter_chain_match?.destination_port?.value;
      if (ip === undefined || port === undefined || (ip === '10.96.0.20' && port === 5432)) continue;
      const m = state.matchOutbound(ip, port);
      assert.ok(m.kind !== 'tcp' || m.detectHttp === undefined, `${ip}:${port} is declared`);
    }
  });

  it('canary: the weighted split and the header route of the reviews Service', {
    skip: !cases.includes('canary'),
  }, () => {
    const g = JSON.parse(readFileSync(path.join(GOLDEN, 'canary', 'expected.json'), 'utf8')) as Golden;
    const state = MeshState.fromSnapshot(g);
    const m = state.matchOutbound('10.96.0.10', 9080);
    assert.ok(m.kind === 'http');
    const weighted = m.routeConfig.virtualHosts
      .flatMap((vh) => vh.routes)
      .map((r) => (r.behaviour.kind === 'forward' ? r.behaviour.action.target : undefined))
      .find((t) => t?.kind === 'weighted');
    assert.ok(weighted?.kind === 'weighted', 'the canary case has a weighted route');
    const rand = seeded(7);
    const counts = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const c = pickWeightedCluster(weighted.weighted, rand).name;
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    for (const c of weighted.weighted.clusters) {
      const share = (counts.get(c.name) ?? 0) / 10_000;
      assert.ok(Math.abs(share - c.weight / weighted.weighted.total) < 0.02, `${c.name}: ${share}`);
    }
  });

  it('authz: inbound chains carry RBAC the Authorizer evaluates', { skip: !cases.includes('authz') }, () => {
    const g = JSON.parse(readFileSync(path.join(GOLDEN, 'authz', 'expected.json'), 'utf8')) as Golden;
    const state = MeshState.fromSnapshot(g);
    const reviews = state.matchInbound('10.1.1.10', 9080);
    assert.ok(reviews.chain);
    assert.ok(!reviews.authorizer.isEmpty);
    const td = 'spiffe://cluster.local';
    const allowed = reviews.authorizer.evaluate({
      sourcePrincipal: `${td}/ns/shop/sa/frontend`,
      sourceNamespace: 'shop',
      destinationPort: 9080,
      method: 'GET',
      path: '/reviews/1',
    });
    assert.ok(allowed.allowed, JSON.stringify(allowed));
    const stranger = reviews.authorizer.evaluate({
      sourcePrincipal: `${td}/ns/elsewhere/sa/x`,
      sourceNamespace: 'elsewhere',
      destinationPort: 8080,
      method: 'GET',
      path: '/reviews/1',
    });
    assert.ok(!stranger.allowed);
    // The chain's sockmesh metadata names the pod; clusters name their Service.
    assert.equal(reviews.chain.meta.pod, 'reviews-0');
    assert.equal(reviews.chain.meta.spiffeId, `${td}/ns/shop/sa/reviews`);
    assert.equal(state.cluster('outbound|9080||reviews.shop.svc.cluster.local')?.meta.service, 'reviews');
    // A destination that is not a meshed pod of this node is refused.
    const unknown = state.matchInbound('10.9.9.9', 80);
    assert.equal(unknown.chain?.name, 'unknown-destination');
    assert.ok(unknown.authorizer instanceof Authorizer);
    assert.ok(
      !unknown.authorizer.evaluate({
        sourcePrincipal: `${td}/ns/shop/sa/frontend`,
        sourceNamespace: 'shop',
        destinationPort: 80,
      }).allowed,
    );
  });
});
