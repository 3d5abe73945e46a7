import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clusterRefs, Warming } from '../../../mesh-agent/agent/warming.js';
import { MeshState } from '../../../mesh-agent/state/index.js';
import type { XdsConfig } from '../../../xds/client/ads-client.js';
import { CLUSTER_TYPE, LISTENER_TYPE, type ProtoObject, ROUTE_TYPE } from '../../../xds/protos.js';
import { assignment, chain, hcm, type Raw, tcpProxy, wire } from './fixtures/envoy.js';

const listener = (route: string, tcpCluster: string) =>
  wire(LISTENER_TYPE, {
    name: 'outbound',
    address: { socket_address: { address: '0.0.0.0', port_value: 15001 } },
    use_original_dst: { value: true },
    filter_chains: [
      chain('reviews', '10.96.0.20', 9080, [hcm(route)]),
      chain('db', '10.96.0.40', 5432, [tcpProxy(tcpCluster)]),
    ],
  });
const routes = (name: string, cluster: string) =>
  wire(ROUTE_TYPE, {
    name,
    virtual_hosts: [
      { name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster } }] },
    ],
  });
const eds = (name: string) =>
  wire(CLUSTER_TYPE, {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' }, service_name: name },
  });
const cla = (name: string) =>
  assignment(name, [{ ip: '10.1.1.10', port: 9080, node: 'node-1', pod: `${name}-0` }]);

const byName = (key: string, list: Raw[]) =>
  new Map(list.map((r) => [r[key] as string, r as ProtoObject])) as ReadonlyMap<string, ProtoObject>;

/** What the ADS client hands over after each response. */
function cfg(l: Raw[], r: Raw[], c: Raw[], e: Raw[], v: string): XdsConfig {
  return {
    listeners: byName('name', l),
    routes: byName('name', r),
    clusters: byName('name', c),
    endpoints: byName('cluster_name', e),
    versions: { LDS: v, RDS: v, CDS: v, EDS: v },
  };
}

/** Every cluster the applied listeners and routes name is there, with endpoints. */
function consistent(c: XdsConfig): string[] {
  const state = MeshState.fromSnapshot({
    listeners: c.listeners,
    routes: c.routes,
    clusters: c.clusters,
    endpoints: c.endpoints,
  });
  const gaps = [...state.warnings];
  for (const n of clusterRefs(c.listeners, c.routes))
    if (state.endpoints(n).length === 0) gaps.push(`${n} has no endpoints`);
  return gaps;
}

describe('Warming: the agent applies one consistent set', () => {
  // A rename as the ADS client delivers it, one type at a time: CDS (a gone, b new), EDS (b), then LDS and RDS.
  const steps = [
    cfg([listener('r', 'a')], [routes('r', 'a')], [eds('a')], [cla('a')], '1'),
    cfg([listener('r', 'a')], [routes('r', 'a')], [eds('b')], [], '2'),
    cfg([listener('r', 'a')], [routes('r', 'a')], [eds('b')], [cla('b')], '3'),
    cfg([listener('r2', 'b')], [], [eds('b')], [cla('b')], '4'),
    cfg([listener('r2', 'b')], [routes('r2', 'b')], [eds('b')], [cla('b')], '5'),
  ];

  it('the raw sequence has gaps (the control: what applying each type at once meant)', () => {
    assert.ok(steps.some((s) => consistent(s).length > 0));
  });

  it('a route never names a cluster without endpoints at any step of a rename', () => {
    const w = new Warming();
    let t = 0;
    for (const s of steps) {
      t += 10;
      const { config } = w.next(s, t);
      assert.deepEqual(consistent(config), [], `after version ${s.versions.CDS}`);
    }
    t += 10;
    const last = w.next(steps.at(-1)!, t);
    assert.deepEqual(last.waiting, []);
    assert.deepEqual(
      [...last.config.clusters.keys()],
      ['b'],
      'the removed cluster goes once nothing names it',
    );
    assert.deepEqual([...last.config.routes.keys()], ['r2']);
  });

  it('holds a route that names a cluster not there yet, then applies it when warm or after the timeout', () => {
    const w = new Warming(1000);
    w.next(steps[0]!, 0);
    const early = w.next(cfg([listener('r', 'a')], [routes('r', 'c')], [eds('a')], [cla('a')], '2'), 10);
    assert.deepEqual(early.waiting, ['cluster c']);
    assert.equal(early.retryAtMs, 1010);
    assert.equal(early.config.routes.get('r'), steps[0]!.routes.get('r'), 'the routes in force stay');
    const warm = w.next(
      cfg([listener('r', 'a')], [routes('r', 'c')], [eds('a'), eds('c')], [cla('a'), cla('c')], '3'),
      20,
    );
    assert.deepEqual(warm.waiting, []);
    assert.deepEqual(consistent(warm.config), []);
    const w2 = new Warming(1000);
    w2.next(steps[0]!, 0);
    w2.next(cfg([listener('r', 'a')], [routes('r', 'never')], [eds('a')], [cla('a')], '2'), 10);
    const late = w2.next(
      cfg([listener('r', 'a')], [routes('r', 'never')], [eds('a')], [cla('a')], '2'),
      1010,
    );
    assert.deepEqual(late.waiting, [], 'a name that never comes does not hold the config forever');
    assert.equal((late.config.routes.get('r') as { name: string }).name, 'r');
  });
});
