import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isSockmeshError } from '../../../lib/errors.js';
import { selectRoute } from '../../../mesh-agent/routing/index.js';
import {
  ipToBigInt,
  MeshState,
  MeshStateStore,
  parseCidrRange,
  parseCluster,
  parseEndpoints,
  parseListener,
  structToPlain,
  validateResources,
} from '../../../mesh-agent/state/index.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../../../xds/protos.js';
import {
  assignment,
  chain,
  clusters,
  endpoints,
  hcm,
  inboundListener,
  outboundListener,
  type Raw,
  RBAC_TYPE,
  reviewsRoutes,
  snapshot,
  TD,
  tcpProxy,
  wire,
} from './fixtures/envoy.js';

const state = MeshState.fromSnapshot(snapshot);

describe('MeshState.matchOutbound', () => {
  const table: Array<[string, string, number, string]> = [
    ['HTTP service VIP', '10.96.0.20', 9080, 'http:reviews.shop:9080'],
    ['another HTTP VIP', '10.96.0.30', 9080, 'http:ratings.shop:9080'],
    ['TCP service VIP', '10.96.0.40', 5432, 'tcp:db'],
    ['longest prefix wins: /16 for an unlisted VIP', '10.96.7.7', 9080, 'tcp:svc-cidr-9080'],
    [
      'exact port beats a port-less chain; no fallback to other ports',
      '10.96.0.20',
      9081,
      'passthrough:original-dst-cluster',
    ],
    ['port-only chain', '192.0.2.1', 7000, 'tcp:any-7000'],
    ['port-only chain for any IP, even a VIP', '10.96.0.20', 7000, 'tcp:any-7000'],
    [
      'unknown destination: default chain to an ORIGINAL_DST cluster',
      '203.0.113.9',
      443,
      'passthrough:original-dst-cluster',
    ],
    ['IPv6 destination', 'fd00::1', 443, 'passthrough:original-dst-cluster'],
  ];
  for (const [name, ip, port, expected] of table) {
    it(name, () => {
      const m = state.matchOutbound(ip, port);
      const got =
        m.kind === 'http'
          ? `http:${m.routeConfigName}`
          : m.kind === 'tcp'
            ? `tcp:${m.chain.name}`
            : `passthrough:${m.reason}`;
      assert.equal(got, expected);
    });
  }

  it('the HTTP match carries the parsed route config, ready for selectRoute', () => {
    const m = state.matchOutbound('10.96.0.20', 9080);
    assert.ok(m.kind === 'http');
    const d = selectRoute(m.routeConfig, {
      authority: 'reviews:9080',
      path: '/',
      method: 'GET',
      headers: { 'x-canary': 'true' },
    });
    assert.ok(
      d.kind === 'forward' && d.action.target.kind === 'cluster' && d.action.target.name === 'reviews-v2',
    );
  });

  it('TCP weighted clusters (plain uint32 weights)', () => {
    const m = state.matchOutbound('10.96.0.40', 5432);
    assert.ok(m.kind === 'tcp' && m.tcpProxy.target.kind === 'weighted');
    assert.deepEqual(
      m.tcpProxy.target.weighted.clusters.map((c) => [c.name, c.weight]),
      [
        ['db-primary', 3],
        ['db-replica', 1],
      ],
    );
    assert.equal(m.tcpProxy.idleTimeoutMs, 3_600_000);
  });

  it('the fixture snapshot is complete: no dangling references', () => {
    assert.deepEqual(state.warnings, []);
    const s = MeshState.fromSnapshot({
      ...snapshot,
      clusters: clusters.filter((c) => c.name !== 'db-replica'),
    });
    assert.deepEqual(s.warnings, ['listener outbound chain db: cluster db-replica not received']);
  });

  it('no listener at all: passthrough', () => {
    assert.deepEqual(MeshState.empty().matchOutbound('10.0.0.1', 80), {
      kind: 'passthrough',
      reason: 'no-listener',
    });
  });

  it('without a default chain an unmatched destination is passed through', () => {
    const s = MeshState.fromSnapshot({
      listeners: [
        wire(LISTENER_TYPE, {
          name: 'out',
          use_original_dst: { value: true },
          filter_chains: [chain('a', '10.0.0.1', 80, [tcpProxy('a')])],
        }),
      ],
    });
    assert.deepEqual(s.matchOutbound('10.0.0.2', 80), { kind: 'passthrough', reason: 'no-filter-chain' });
  });

  it('Envoy: a port group that exists but does not match the IP falls to the default chain, not to port-less chains', () => {
    const s = MeshState.fromSnapshot({
      listeners: [
        wire(LISTENER_TYPE, {
          name: 'out',
          use_original_dst: { value: true },
          filter_chains: [
            chain('vip', '10.0.0.1', 80, [tcpProxy('vip')]),
            chain('net', '10.0.0.0/8', undefined, [tcpProxy('net')]),
            chain('portless', undefined, undefined, [tcpProxy('portless')]),
          ],
          default_filter_chain: { name: 'fallback', filters: [tcpProxy('fallback')] },
        }),
      ],
    });
    const name = (ip: string, port: number) => {
      const m = s.matchOutbound(ip, port);
      return m.kind === 'tcp' ? m.chain.name : m.kind;
    };
    assert.equal(name('10.0.0.1', 80), 'vip');
    assert.equal(name('10.0.0.2', 80), 'fallback');
    assert.equal(name('10.0.0.2', 81), 'net');
    assert.equal(name('192.0.2.1', 81), 'portless');
  });

  it('a missing RDS resource gives an empty route config (404s) and a warning', () => {
    const s = MeshState.fromSnapshot({ ...snapshot, routes: [reviewsRoutes] });
    const m = s.matchOutbound('10.96.0.30', 9080);
    assert.ok(m.kind === 'http');
    assert.equal(
      selectRoute(m.routeConfig, { authority: 'ratings', path: '/', method: 'GET', headers: {} }).kind,
      'respond',
    );
    assert.ok(s.warnings.some((w) => w.includes('ratings.shop:9080 not received')));
  });

  it('an Istio-style virtual listener on exactly the destination takes precedence', () => {
    const virtual = wire(LISTENER_TYPE, {
      name: '10.96.0.20_9080',
      address: { socket_address: { address: '10.96.0.20', port_value: 9080 } },
      bind_to_port: { value: false },
      filter_chains: [{ filters: [tcpProxy('virtual')] }],
    });
    const s = MeshState.fromSnapshot({ ...snapshot, listeners: [outboundListener, virtual] });
    const m = s.matchOutbound('10.96.0.20', 9080);
    assert.ok(m.kind === 'tcp' && m.listener === '10.96.0.20_9080');
    assert.equal(s.matchOutbound('10.96.0.30', 9080).kind, 'http');
  });

  it('finds the capture listener by port 15001 or by name', () => {
    const plain = wire(LISTENER_TYPE, {
      name: 'capture',
      address: { socket_address: { address: '0.0.0.0', port_value: 15001 } },
      filter_chains: [chain('a', '10.0.0.1', 80, [tcpProxy('a')])],
    });
    assert.equal(MeshState.fromSnapshot({ listeners: [plain] }).matchOutbound('10.0.0.1', 80).kind, 'tcp');
    const named = { ...plain, name: 'elsewhere', address: undefined };
    assert.equal(
      MeshState.fromSnapshot({ listeners: [named] }).matchOutbound('10.0.0.1', 80).kind,
      'passthrough',
    );
    assert.equal(
      MeshState.fromSnapshot({ listeners: [named] }, { outboundListener: 'elsewhere' }).matchOutbound(
        '10.0.0.1',
        80,
      ).kind,
      'tcp',
    );
  });
});

describe('MeshState.matchInbound', () => {
  const rules = (action: string, principal: string) => ({
    action,
    policies: {
      [`shop/${action.toLowerCase()}`]: {
        permissions: [{ any: true }],
        principals: [{ authenticated: { principal_name: { exact: principal } } }],
      },
    },
  });

  it('network RBAC of the chain for the destination pod', () => {
    const s = MeshState.fromSnapshot({
      listeners: [outboundListener, inboundListener([rules('DENY', `${TD}/ns/evil/sa/x`)])],
    });
    const m = s.matchInbound('10.1.1.10', 9080);
    assert.equal(m.chain?.name, 'reviews-v1');
    assert.ok(
      !m.authorizer.evaluate({
        sourcePrincipal: `${TD}/ns/evil/sa/x`,
        sourceNamespace: 'evil',
        destinationPort: 9080,
      }).allowed,
    );
    assert.ok(
      m.authorizer.evaluate({
        sourcePrincipal: `${TD}/ns/shop/sa/x`,
        sourceNamespace: 'shop',
        destinationPort: 9080,
      }).allowed,
    );
    assert.equal(m.httpAuthorizer, undefined);
  });

  it('HTTP RBAC inside the connection manager', () => {
    const s = MeshState.fromSnapshot({
      listeners: [inboundListener([], [rules('ALLOW', `${TD}/ns/shop/sa/web`)])],
    });
    const m = s.matchInbound('10.1.1.10', 9080);
    assert.ok(m.authorizer.isEmpty);
    assert.ok(
      m.httpAuthorizer?.evaluate({
        sourcePrincipal: `${TD}/ns/shop/sa/web`,
        sourceNamespace: 'shop',
        destinationPort: 9080,
      }).allowed,
    );
    assert.ok(
      !m.httpAuthorizer?.evaluate({
        sourcePrincipal: `${TD}/ns/shop/sa/db`,
        sourceNamespace: 'shop',
        destinationPort: 9080,
      }).allowed,
    );
  });

  it('no inbound listener or no chain: allow-all', () => {
    assert.ok(state.matchInbound('10.1.1.10', 9080).authorizer.isEmpty);
    const s = MeshState.fromSnapshot({ listeners: [inboundListener([rules('DENY', 'x')])] });
    assert.equal(s.matchInbound('10.1.1.99', 9080).chain, undefined);
  });

  it('accepts the bare RBAC message type too', () => {
    assert.equal(RBAC_TYPE.endsWith('envoy.config.rbac.v3.RBAC'), true);
  });
});

describe('MeshState clusters and endpoints', () => {
  it('EDS endpoints with sockmesh metadata', () => {
    const eps = state.endpoints('reviews-v1');
    assert.equal(eps.length, 3);
    assert.deepEqual(eps[0], {
      key: '10.1.1.10:9080',
      address: '10.1.1.10',
      port: 9080,
      locality: { region: 'local', zone: 'node-1' },
      healthy: true,
      weight: 1,
      meta: {
        pod: 'reviews-v1-a',
        namespace: 'shop',
        node: 'node-1',
        podIp: '10.1.1.10',
        tunnelAddress: '192.168.77.1:15008',
        spiffeId: `${TD}/ns/shop/sa/reviews`,
        version: 'v1',
        serviceAccount: 'reviews',
      },
    });
  });

  it('inline endpoints for STATIC clusters, empty for unknown ones', () => {
    assert.deepEqual(
      state.endpoints('static-one').map((e) => e.key),
      ['127.0.0.1:9000'],
    );
    assert.deepEqual(state.endpoints('nope'), []);
    assert.deepEqual(state.endpoints('reviews-v3'), []);
  });

  it('cluster settings', () => {
    const v1 = state.cluster('reviews-v1');
    assert.equal(v1?.balancer.policy, 'LEAST_REQUEST');
    assert.equal(v1?.connectTimeoutMs, 1000);
    assert.equal(v1?.discovery, 'EDS');
    const v2 = state.cluster('reviews-v2');
    assert.deepEqual(v2?.balancer, { policy: 'RING_HASH', ringHash: { minRingSize: 512 } });
    assert.equal(v2?.outlier, undefined);
    assert.equal(state.cluster('reviews-v3')?.balancer.policy, 'ROUND_ROBIN');
    assert.equal(state.cluster('PassthroughCluster')?.discovery, 'ORIGINAL_DST');
    assert.equal(parseCluster(wire(CLUSTER_TYPE, { name: 'bare' })).connectTimeoutMs, 5000);
    assert.equal(state.clusterNames().length, clusters.length);
  });

  it('eds_cluster_config.service_name names the assignment', () => {
    const s = MeshState.fromSnapshot({
      clusters: [
        wire(CLUSTER_TYPE, {
          name: 'outbound|80||x',
          type: 'EDS',
          eds_cluster_config: { service_name: 'x-eds' },
        }),
      ],
      endpoints: [assignment('x-eds', [{ ip: '10.0.0.1', port: 80, node: 'n', pod: 'p' }])],
    });
    assert.equal(s.endpoints('outbound|80||x').length, 1);
  });
});

describe('MeshStateStore: atomic swap', () => {
  it('applies a good snapshot, keeps the old one on a bad one', () => {
    const store = new MeshStateStore();
    assert.equal(store.current.matchOutbound('10.96.0.20', 9080).kind, 'passthrough');
    store.apply(snapshot);
    const good = store.current;
    assert.equal(good.version, '7');
    const bad = {
      ...snapshot,
      version: '8',
      clusters: [...clusters, { name: 'broken', lb_policy: 'MAGLEV' }],
    };
    assert.throws(
      () => store.apply(bad),
      (e: unknown) =>
        isSockmeshError(e, 'SOCKMESH_E_XDS') &&
        /Cluster "broken"\.lb_policy: MAGLEV is not supported/.test(e.message),
    );
    assert.equal(store.current, good);
    assert.equal(store.current.matchOutbound('10.96.0.20', 9080).kind, 'http');
  });

  it('a state already handed out keeps answering from its own snapshot', () => {
    const store = new MeshStateStore();
    store.apply(snapshot);
    const held = store.current;
    store.apply({ ...snapshot, listeners: [], version: '9' });
    assert.equal(held.matchOutbound('10.96.0.20', 9080).kind, 'http');
    assert.equal(store.current.matchOutbound('10.96.0.20', 9080).kind, 'passthrough');
  });

  it('reports every bad resource at once, and duplicates', () => {
    try {
      MeshState.fromSnapshot({
        listeners: [{ name: 'l', filter_chains: [{ filters: [] }] }, outboundListener, outboundListener],
        clusters: [{ name: 'c', type: 'WEIRD' }],
      });
      assert.fail('should throw');
    } catch (e) {
      assert.ok(isSockmeshError(e, 'SOCKMESH_E_XDS'));
      assert.match(e.message, /3 invalid resources/);
      assert.match(e.message, /needs a terminal filter/);
      assert.match(e.message, /Listener "outbound" appears twice/);
      assert.match(e.message, /Cluster "c"\.type: expected one of/);
      assert.ok(e.hint);
    }
  });

  it('an unchanged decoded resource is parsed once and shared between snapshots', () => {
    const a = MeshState.fromSnapshot(snapshot);
    const b = MeshState.fromSnapshot({ ...snapshot, version: 'next' });
    assert.equal(a.routeConfig('reviews.shop:9080'), b.routeConfig('reviews.shop:9080'));
    assert.equal(a.cluster('reviews-v1'), b.cluster('reviews-v1'));
    // A structurally equal but new object is parsed again.
    const copy = structuredClone(reviewsRoutes);
    const c = MeshState.fromSnapshot({ ...snapshot, routes: [copy] });
    assert.notEqual(c.routeConfig('reviews.shop:9080'), a.routeConfig('reviews.shop:9080'));
    assert.deepEqual(c.routeConfig('reviews.shop:9080')?.name, 'reviews.shop:9080');
  });

  it('accepts maps and records of resources by name', () => {
    const byMap = MeshState.fromSnapshot({
      listeners: new Map([['outbound', outboundListener]]),
      routes: { r: reviewsRoutes },
    });
    assert.equal(byMap.matchOutbound('10.96.0.20', 9080).kind, 'http');
  });
});

describe('listener validation', () => {
  const l = (chains: Raw[]) => wire(LISTENER_TYPE, { name: 'l', filter_chains: chains });
  it('rejects duplicate chain matches', () => {
    assert.throws(
      () =>
        parseListener(
          l([chain('a', '10.0.0.1', 80, [tcpProxy('a')]), chain('b', '10.0.0.1', 80, [tcpProxy('b')])]),
        ),
      /same match as filter_chains\[0\]/,
    );
  });
  it('rejects unsupported match criteria and filters', () => {
    assert.throws(
      () => parseListener(l([{ filter_chain_match: { server_names: ['x'] }, filters: [tcpProxy('a')] }])),
      /filter_chain_match\.server_names: is not supported/,
    );
    assert.throws(
      () =>
        parseListener(l([{ filters: [{ name: 'x', typed_config: { '@type': CLUSTER_TYPE, name: 'c' } }] }])),
      /unsupported network filter envoy\.config\.cluster\.v3\.Cluster/,
    );
    assert.throws(
      () => parseListener(l([{ filters: [tcpProxy('a'), tcpProxy('b')] }])),
      /filters after a terminal filter/,
    );
    assert.throws(
      () =>
        parseListener(
          l([
            {
              filters: [
                hcm('r', [{ name: 'envoy.filters.http.fault', typed_config: { '@type': CLUSTER_TYPE } }]),
              ],
            },
          ]),
        ),
      /unsupported HTTP filter envoy\.config\.cluster\.v3\.Cluster/,
    );
    assert.equal(
      parseListener(
        l([
          {
            filters: [hcm('r', [{ name: 'x', is_optional: true, typed_config: { '@type': CLUSTER_TYPE } }])],
          },
        ]),
      ).chains.length,
      1,
      'optional HTTP filters are skipped',
    );
  });
  it('IPv6 prefixes, inline route configs and TCP idle timeouts', () => {
    const idleOff = tcpProxy('x');
    (idleOff.typed_config as Raw).idle_timeout = { seconds: 0 };
    const raw = wire(LISTENER_TYPE, {
      name: 'v6',
      filter_chains: [
        {
          name: 'v6-net',
          filter_chain_match: {
            destination_port: { value: 80 },
            prefix_ranges: [{ address_prefix: 'fd00::', prefix_len: { value: 64 } }],
          },
          filters: [idleOff],
        },
        {
          name: 'inline',
          filter_chain_match: {
            destination_port: { value: 80 },
            prefix_ranges: [{ address_prefix: 'fd00::1', prefix_len: { value: 128 } }],
          },
          filters: [
            {
              name: 'hcm',
              typed_config: {
                '@type':
                  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                stat_prefix: 'x',
                route_config: {
                  name: 'inline-rc',
                  virtual_hosts: [
                    {
                      name: 'v',
                      domains: ['*'],
                      routes: [{ match: { prefix: '/' }, route: { cluster: 'x' } }],
                    },
                  ],
                },
              },
            },
          ],
        },
      ],
    });
    const s = MeshState.fromSnapshot(
      { listeners: [raw], clusters: [wire(CLUSTER_TYPE, { name: 'x' })] },
      { outboundListener: 'v6' },
    );
    const inline = s.matchOutbound('fd00::1', 80);
    assert.ok(inline.kind === 'http' && inline.routeConfigName === 'inline-rc');
    const net = s.matchOutbound('fd00::2', 80);
    assert.ok(net.kind === 'tcp' && net.chain.name === 'v6-net');
    assert.equal(net.tcpProxy.idleTimeoutMs, null);
    assert.deepEqual(s.matchOutbound('fd01::1', 80), { kind: 'passthrough', reason: 'no-filter-chain' });
    assert.deepEqual(s.matchOutbound('10.0.0.1', 80), { kind: 'passthrough', reason: 'no-filter-chain' });
    assert.throws(
      () =>
        parseListener(
          wire(LISTENER_TYPE, {
            name: 'h',
            filter_chains: [
              {
                filters: [
                  {
                    name: 'hcm',
                    typed_config: {
                      '@type':
                        'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                      stat_prefix: 'x',
                    },
                  },
                ],
              },
            ],
          }),
        ),
      /needs rds or route_config/,
    );
  });

  it('application_protocols: an HTTP chain beside a TCP one on the same match means "detect"', () => {
    const http = chain('svc-http', '10.96.0.50', 7000, [hcm('svc.shop:7000')]);
    (http.filter_chain_match as Raw).application_protocols = ['http/1.0', 'http/1.1', 'h2c'];
    const raw = l([chain('svc', '10.96.0.50', 7000, [tcpProxy('svc-cluster')]), http]);
    const parsed = parseListener(raw);
    assert.deepEqual(parsed.chains[1]?.applicationProtocols, ['http/1.0', 'http/1.1', 'h2c']);
    const s = MeshState.fromSnapshot(
      { listeners: [raw], clusters: [wire(CLUSTER_TYPE, { name: 'svc-cluster' })] },
      { outboundListener: 'l' },
    );
    const m = s.matchOutbound('10.96.0.50', 7000);
    // TCP unless the first bytes say HTTP: a consumer that does not detect gets today's L4 behaviour.
    assert.ok(m.kind === 'tcp' && m.chain.name === 'svc');
    assert.equal(m.detectHttp?.kind, 'http');
    assert.equal(m.detectHttp?.routeConfigName, 'svc.shop:7000');
    // Without the TCP sibling, the HTTP chain alone is what matches.
    const alone = MeshState.fromSnapshot({ listeners: [l([http])] }, { outboundListener: 'l' });
    assert.equal(alone.matchOutbound('10.96.0.50', 7000).kind, 'http');
    assert.throws(
      () => parseListener(l([http, structuredClone(http)])),
      /same match as filter_chains\[0\]/,
      'two chains with the same application protocols still clash',
    );
    const other = chain('x', '10.96.0.50', 7000, [hcm('x')]);
    (other.filter_chain_match as Raw).application_protocols = ['h2'];
    assert.throws(
      () => parseListener(l([other])),
      /application_protocols: only http\/1\.0, http\/1\.1 and h2c/,
    );
  });

  it('accepts transport_protocol raw_buffer', () => {
    assert.equal(
      parseListener(
        l([{ filter_chain_match: { transport_protocol: 'raw_buffer' }, filters: [tcpProxy('a')] }]),
      ).chains.length,
      1,
    );
  });
});

describe('endpoint and wire helpers', () => {
  it('rejects duplicate endpoints and non-IP addresses', () => {
    const dup = wire(ENDPOINT_TYPE, {
      cluster_name: 'd',
      endpoints: [
        {
          lb_endpoints: [1, 2].map(() => ({
            endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 80 } } },
          })),
        },
      ],
    });
    assert.throws(() => parseEndpoints(dup), /duplicate endpoint 10\.0\.0\.1:80/);
    const host = wire(ENDPOINT_TYPE, {
      cluster_name: 'h',
      endpoints: [
        {
          lb_endpoints: [
            { endpoint: { address: { socket_address: { address: 'db.local', port_value: 80 } } } },
          ],
        },
      ],
    });
    assert.throws(() => parseEndpoints(host), /not an IP address: db\.local/);
  });

  it('IPv6 endpoint keys are bracketed; unhealthy states are not healthy', () => {
    const eps = parseEndpoints(
      wire(ENDPOINT_TYPE, {
        cluster_name: 'v6',
        endpoints: [
          {
            lb_endpoints: [
              {
                endpoint: { address: { socket_address: { address: 'fd00::5', port_value: 80 } } },
                health_status: 'UNHEALTHY',
              },
              {
                endpoint: { address: { socket_address: { address: 'fd00::6', port_value: 80 } } },
                load_balancing_weight: { value: 5 },
              },
            ],
          },
        ],
      }),
    ).endpoints;
    assert.deepEqual(
      eps.map((e) => [e.key, e.healthy, e.weight]),
      [
        ['[fd00::5]:80', false, 1],
        ['[fd00::6]:80', true, 5],
      ],
    );
  });

  it('CIDR parsing and containment, v4 and v6', () => {
    const p = parseCidrRange({ address_prefix: '10.96.0.0', prefix_len: { value: 12 } }, 'c');
    assert.equal(p.text, '10.96.0.0/12');
    assert.equal(ipToBigInt('::ffff:10.0.0.1')?.bits, 0xffff0a000001n);
    assert.equal(ipToBigInt('fd00::1')?.bits, (0xfd00n << 112n) | 1n);
    assert.equal(ipToBigInt('nope'), undefined);
    assert.throws(
      () => parseCidrRange({ address_prefix: '10.0.0.0', prefix_len: { value: 33 } }, 'c'),
      /too long for IPv4/,
    );
  });

  it('Struct metadata in proto form (camelCase or snake_case values) or plain JSON', () => {
    assert.deepEqual(
      structToPlain(
        {
          fields: {
            a: { stringValue: 'x' },
            b: { number_value: 2 },
            c: { boolValue: true },
            d: { nullValue: 'NULL_VALUE' },
            e: { listValue: { values: [{ stringValue: 'y' }] } },
            f: { structValue: { fields: { g: { stringValue: 'z' } } } },
          },
        },
        'm',
      ),
      { a: 'x', b: 2, c: true, d: null, e: ['y'], f: { g: 'z' } },
    );
    assert.deepEqual(structToPlain({ pod: 'p', n: [1] }, 'm'), { pod: 'p', n: [1] });
  });

  it('the fixtures really are in the decoded wire shape', () => {
    assert.equal(
      (endpoints[0] as { endpoints: Array<{ lb_endpoints: Array<{ host_identifier: string }> }> })
        .endpoints[0]?.lb_endpoints[0]?.host_identifier,
      'endpoint',
    );
    const vhosts = reviewsRoutes.virtual_hosts as Array<{ routes: Raw[] }>;
    assert.equal(vhosts[0]?.routes[0]?.action, 'route');
  });
});

describe('validateResources (for the xDS client to ACK or NACK one type)', () => {
  it('accepts the fixtures, type by type', () => {
    assert.equal(
      validateResources(`type.googleapis.com/envoy.config.listener.v3.Listener`, [outboundListener]),
      undefined,
    );
    assert.equal(
      validateResources(
        'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
        new Map([['r', reviewsRoutes]]),
      ),
      undefined,
    );
    assert.equal(
      validateResources('type.googleapis.com/envoy.config.cluster.v3.Cluster', clusters),
      undefined,
    );
    assert.equal(
      validateResources('type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment', endpoints),
      undefined,
    );
  });

  it('returns every error as the NACK detail', () => {
    const detail = validateResources('type.googleapis.com/envoy.config.cluster.v3.Cluster', {
      a: { name: 'a', lb_policy: 'RANDOM' },
      b: { name: 'b', connect_timeout: { seconds: 'x' } },
    });
    assert.match(
      detail ?? '',
      /Cluster "a"\.lb_policy: RANDOM is not supported.*; .*Cluster "b"\.connect_timeout\.seconds/,
    );
    assert.match(
      validateResources('type.googleapis.com/envoy.config.core.v3.Other', []) ?? '',
      /does not use/,
    );
  });

  it('MeshState takes the xDS client config shape (maps and per-type versions)', () => {
    const s = MeshState.fromSnapshot({
      listeners: new Map([['outbound', outboundListener]]),
      routes: new Map(),
      clusters: new Map(),
      endpoints: new Map(),
      versions: { LDS: '3', RDS: undefined, CDS: '1', EDS: '1' },
    });
    assert.equal(s.version, 'LDS=3,CDS=1,EDS=1');
  });
});
