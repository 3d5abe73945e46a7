import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isSockmeshError } from '../../../lib/errors.js';
import {
  applyHeaderMutations,
  chooseCluster,
  type HttpRequest,
  hashKeyFor,
  parseRouteConfiguration,
  pickWeightedCluster,
  type RouteConfig,
  requestMutationLevels,
  selectRoute,
  selectVirtualHost,
  stripPort,
} from '../../../mesh-agent/routing/index.js';
import { ROUTE_TYPE } from '../../../xds/protos.js';
import { type Raw, ratingsRoutes, reviewsRoutes, wire } from './fixtures/envoy.js';
import { seeded } from './fixtures/rng.js';

function req(
  authority: string,
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
): HttpRequest {
  return { authority, path, method, headers };
}

function forwardName(rc: RouteConfig, r: HttpRequest): string {
  const d = selectRoute(rc, r);
  return d.kind === 'forward' ? (d.route.name ?? '?') : `${d.status}:${d.reason}`;
}

const reviews = parseRouteConfiguration(reviewsRoutes);
const ratings = parseRouteConfiguration(ratingsRoutes);

describe('selectRoute on the reviews fixture', () => {
  const table: Array<[string, HttpRequest, string]> = [
    ['header match wins over split', req('reviews', '/anything', { 'x-canary': 'true' }), 'canary-header'],
    ['header value must match exactly', req('reviews', '/anything', { 'x-canary': 'TRUE' }), 'split'],
    ['exact path + :method', req('reviews:9080', '/api/v1/health'), 'api-exact'],
    ['exact path ignores the query string', req('reviews', '/api/v1/health?verbose=1'), 'api-exact'],
    ['exact path with another method', req('reviews', '/api/v1/health', {}, 'POST'), 'split'],
    ['exact path is not a prefix', req('reviews', '/api/v1/health/x'), 'split'],
    ['query parameter match', req('reviews', '/search?q=x&beta=1'), 'query'],
    ['query parameter first value counts', req('reviews', '/search?beta=2&beta=1'), 'split'],
    ['query parameter absent', req('reviews', '/search?q=x'), 'split'],
    ['regex is a full match', req('reviews', '/items/42'), 'regex'],
    ['regex does not match a longer path', req('reviews', '/items/42/x'), 'split'],
    ['regex ignores the query string', req('reviews', '/items/42?x=1'), 'regex'],
    ['FQDN with port', req('reviews.shop.svc.cluster.local:9080', '/'), 'split'],
    ['VIP as authority', req('10.96.0.20:9080', '/'), 'split'],
    ['authority is case-insensitive', req('Reviews.Shop', '/'), 'split'],
    ['unknown host: no virtual host', req('unknown', '/'), '404:no-virtual-host'],
  ];
  for (const [name, r, expected] of table) {
    it(name, () => assert.equal(forwardName(reviews, r), expected));
  }

  it('returns the action with Envoy timeouts: default 15 s, 0 = disabled', () => {
    const split = selectRoute(reviews, req('reviews', '/'));
    assert.equal(split.kind, 'forward');
    if (split.kind !== 'forward') return;
    assert.equal(split.action.timeoutMs, 15_000);
    assert.equal(split.action.idleTimeoutMs, 60_000);
    assert.equal(split.action.retry?.numRetries, 2);
    assert.equal(split.action.retry?.perTryTimeoutMs, 500);
    const health = selectRoute(reviews, req('reviews', '/api/v1/health'));
    assert.equal(health.kind === 'forward' && health.action.timeoutMs, null);
    const canary = selectRoute(reviews, req('reviews', '/', { 'x-canary': 'true' }));
    assert.equal(canary.kind === 'forward' && canary.action.timeoutMs, 3000);
  });
});

describe('retry policy precedence', () => {
  it('the route policy replaces the virtual host one; without it the vhost one applies', () => {
    const rc = parseRouteConfiguration(
      wire(ROUTE_TYPE, {
        name: 'r',
        virtual_hosts: [
          {
            name: 'v',
            domains: ['*'],
            retry_policy: { retry_on: 'connect-failure', num_retries: { value: 5 } },
            routes: [
              { match: { path: '/own' }, route: { cluster: 'c', retry_policy: { retry_on: '5xx' } } },
              { match: { prefix: '/' }, route: { cluster: 'c' } },
            ],
          },
        ],
      }),
    );
    const own = selectRoute(rc, req('x', '/own'));
    const inherited = selectRoute(rc, req('x', '/other'));
    assert.ok(own.kind === 'forward' && inherited.kind === 'forward');
    assert.deepEqual([...(own.retry?.conditions ?? [])], ['5xx']);
    assert.equal(own.retry?.numRetries, 1);
    assert.deepEqual([...(inherited.retry?.conditions ?? [])], ['connect-failure']);
    assert.equal(inherited.retry?.numRetries, 5);
  });
});

describe('GAMMA: a Service with routes attached rejects requests matching none', () => {
  it('a matching rule forwards (path_separated_prefix)', () => {
    assert.equal(selectRoute(ratings, req('ratings', '/v2')).kind, 'forward');
    assert.equal(selectRoute(ratings, req('ratings', '/v2/stars?x=1')).kind, 'forward');
  });
  it('a near miss gets the 404 direct response', () => {
    for (const path of ['/v2x', '/v', '/', '/V2']) {
      const d = selectRoute(ratings, req('ratings', path));
      assert.equal(d.kind, 'respond', path);
      if (d.kind !== 'respond') continue;
      assert.equal(d.status, 404);
      assert.equal(d.reason, 'direct-response');
      assert.equal(d.body, 'no HTTPRoute rule matched');
    }
  });
  it('no route at all is a 404 too (Envoy NR)', () => {
    const rc = parseRouteConfiguration(
      wire(ROUTE_TYPE, {
        name: 'r',
        virtual_hosts: [
          { name: 'v', domains: ['*'], routes: [{ match: { path: '/only' }, route: { cluster: 'c' } }] },
        ],
      }),
    );
    const d = selectRoute(rc, req('x', '/other'));
    assert.deepEqual(
      [d.kind, d.kind === 'respond' && d.status, d.kind === 'respond' && d.reason],
      ['respond', 404, 'no-route'],
    );
  });
});

describe('virtual host domain matching', () => {
  const rc = parseRouteConfiguration(
    wire(ROUTE_TYPE, {
      name: 'domains',
      virtual_hosts: [
        { name: 'exact', domains: ['api.example.com', 'api.example.com:8443'], routes: [] },
        { name: 'suffix-long', domains: ['*.eu.example.com'], routes: [] },
        { name: 'suffix', domains: ['*.example.com'], routes: [] },
        { name: 'dash', domains: ['*-canary.example.org'], routes: [] },
        { name: 'prefix', domains: ['api.*'], routes: [] },
        { name: 'any', domains: ['*'], routes: [] },
      ],
    }),
  );
  const table: Array<[string, string]> = [
    ['api.example.com', 'exact'],
    ['API.EXAMPLE.COM', 'exact'],
    ['api.example.com:8443', 'exact'],
    ['api.example.com:80', 'exact'],
    ['x.eu.example.com', 'suffix-long'],
    ['eu.example.com', 'suffix'],
    ['x.example.com:9080', 'suffix'],
    ['.example.com', 'prefix'.replace('prefix', 'any')],
    ['web-canary.example.org', 'dash'],
    ['-canary.example.org', 'any'],
    ['api.internal', 'prefix'],
    ['api.', 'any'],
    ['other', 'any'],
    ['[::1]:80', 'any'],
  ];
  for (const [host, vh] of table)
    it(`${host} -> ${vh}`, () => assert.equal(selectVirtualHost(rc, host)?.name, vh));

  it('without a * vhost an unknown host has no virtual host', () => {
    const r = parseRouteConfiguration(
      wire(ROUTE_TYPE, { name: 'r', virtual_hosts: [{ name: 'a', domains: ['a'], routes: [] }] }),
    );
    assert.equal(selectVirtualHost(r, 'b'), undefined);
    assert.equal(selectVirtualHost(r, 'a:1234')?.name, 'a');
  });

  it('stripPort handles names, IPv4 and IPv6', () => {
    assert.equal(stripPort('a:80'), 'a');
    assert.equal(stripPort('a'), undefined);
    assert.equal(stripPort('10.0.0.1:8080'), '10.0.0.1');
    assert.equal(stripPort('[fd00::1]:80'), '[fd00::1]');
    assert.equal(stripPort('[fd00::1]'), undefined);
    assert.equal(stripPort('fd00::1'), undefined);
    assert.equal(stripPort('a:b'), undefined);
  });
});

describe('header and query matchers', () => {
  function one(match: Raw): RouteConfig {
    return parseRouteConfiguration(
      wire(ROUTE_TYPE, {
        name: 'm',
        virtual_hosts: [
          {
            name: 'v',
            domains: ['*'],
            routes: [{ name: 'hit', match: { prefix: '/', ...match }, route: { cluster: 'c' } }],
          },
        ],
      }),
    );
  }
  const hit = (rc: RouteConfig, r: HttpRequest) => selectRoute(rc, r).kind === 'forward';
  const h = (headers: Record<string, string | string[]>) => ({
    authority: 'x',
    path: '/p?a=1&b=two%20words&flag',
    method: 'GET',
    headers,
  });

  const cases: Array<[string, Raw, Record<string, string | string[]>, boolean]> = [
    ['present: header there', { headers: [{ name: 'x-a', present_match: true }] }, { 'x-a': '' }, true],
    ['present: header absent', { headers: [{ name: 'x-a', present_match: true }] }, {}, false],
    ['present false: header absent', { headers: [{ name: 'x-a', present_match: false }] }, {}, true],
    ['present inverted', { headers: [{ name: 'x-a', present_match: true, invert_match: true }] }, {}, true],
    [
      'exact inverted, header differs',
      { headers: [{ name: 'x-a', string_match: { exact: 'v' }, invert_match: true }] },
      { 'x-a': 'w' },
      true,
    ],
    [
      'exact inverted, header absent (Envoy: matches)',
      { headers: [{ name: 'x-a', string_match: { exact: 'v' }, invert_match: true }] },
      {},
      true,
    ],
    ['exact, header absent', { headers: [{ name: 'x-a', string_match: { exact: 'v' } }] }, {}, false],
    [
      'treat missing as empty',
      { headers: [{ name: 'x-a', string_match: { exact: '' }, treat_missing_header_as_empty: true }] },
      {},
      true,
    ],
    ['prefix', { headers: [{ name: 'x-a', string_match: { prefix: 'ab' } }] }, { 'x-a': 'abc' }, true],
    ['suffix', { headers: [{ name: 'x-a', string_match: { suffix: 'bc' } }] }, { 'x-a': 'abc' }, true],
    ['contains', { headers: [{ name: 'x-a', string_match: { contains: 'b' } }] }, { 'x-a': 'abc' }, true],
    [
      'ignore_case',
      { headers: [{ name: 'x-a', string_match: { exact: 'ABC', ignore_case: true } }] },
      { 'x-a': 'abc' },
      true,
    ],
    [
      'case matters by default',
      { headers: [{ name: 'x-a', string_match: { exact: 'ABC' } }] },
      { 'x-a': 'abc' },
      false,
    ],
    [
      'regex full match',
      { headers: [{ name: 'x-a', string_match: { safe_regex: { regex: 'v[0-9]' } } }] },
      { 'x-a': 'v1' },
      true,
    ],
    [
      'regex not partial',
      { headers: [{ name: 'x-a', string_match: { safe_regex: { regex: 'v[0-9]' } } }] },
      { 'x-a': 'v12' },
      false,
    ],
    [
      'repeated header joined with ,',
      { headers: [{ name: 'x-a', string_match: { exact: 'a,b' } }] },
      { 'x-a': ['a', 'b'] },
      true,
    ],
    [
      'header names are case-insensitive',
      { headers: [{ name: 'X-A', string_match: { exact: 'v' } }] },
      { 'x-a': 'v' },
      true,
    ],
    [
      'all headers must match',
      {
        headers: [
          { name: 'x-a', present_match: true },
          { name: 'x-b', present_match: true },
        ],
      },
      { 'x-a': '1' },
      false,
    ],
    ['legacy exact_match', { headers: [{ name: 'x-a', exact_match: 'v' }] }, { 'x-a': 'v' }, true],
    [
      ':authority pseudo-header',
      { headers: [{ name: ':authority', string_match: { exact: 'x' } }] },
      {},
      true,
    ],
    ['query exact', { query_parameters: [{ name: 'a', string_match: { exact: '1' } }] }, {}, true],
    ['query decoded', { query_parameters: [{ name: 'b', string_match: { exact: 'two words' } }] }, {}, true],
    ['query present (no value)', { query_parameters: [{ name: 'flag', present_match: true }] }, {}, true],
    ['query absent', { query_parameters: [{ name: 'zzz', present_match: true }] }, {}, false],
  ];
  for (const [name, match, headers, expected] of cases)
    it(name, () => assert.equal(hit(one(match), h(headers)), expected));

  it('case_sensitive false on a prefix', () => {
    const rc = one({ prefix: '/API', case_sensitive: { value: false } });
    assert.ok(hit(rc, req('x', '/api/x')));
    assert.ok(!hit(one({ prefix: '/API' }), req('x', '/api/x')));
  });

  it('prefix sees the query string (Envoy semantics)', () => {
    assert.ok(hit(one({ prefix: '/p?a' }), req('x', '/p?a=1')));
  });

  it('uses a caller-provided query map instead of parsing', () => {
    const rc = one({ query_parameters: [{ name: 'a', string_match: { exact: '9' } }] });
    assert.ok(hit(rc, { ...req('x', '/p?a=1'), query: new Map([['a', ['9']]]) }));
  });
});

describe('weighted clusters', () => {
  const split = reviews.virtualHosts[0]?.routes.find((r) => r.name === 'split');
  assert.ok(split && split.behaviour.kind === 'forward' && split.behaviour.action.target.kind === 'weighted');
  const weighted = split.behaviour.action.target.weighted;

  it('90/10 over 10 000 picks within tolerance, 0 weight never picked', () => {
    const rand = seeded(42);
    const counts = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const c = pickWeightedCluster(weighted, rand).name;
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    const v2 = counts.get('reviews-v2') ?? 0;
    // Binomial(10000, 0.1): sd = 30, so +-150 is five standard deviations.
    assert.ok(Math.abs(v2 - 1000) < 150, `v2 got ${v2}`);
    assert.equal((counts.get('reviews-v1') ?? 0) + v2, 10_000);
    assert.equal(counts.get('reviews-v3'), undefined);
  });

  it('is deterministic given rand, and covers the edges of [0, 1)', () => {
    assert.equal(pickWeightedCluster(weighted, () => 0).name, 'reviews-v1');
    assert.equal(pickWeightedCluster(weighted, () => 0.8999).name, 'reviews-v1');
    assert.equal(pickWeightedCluster(weighted, () => 0.9).name, 'reviews-v2');
    assert.equal(pickWeightedCluster(weighted, () => 0.999999).name, 'reviews-v2');
    assert.equal(pickWeightedCluster(weighted, () => 1).name, 'reviews-v2');
  });

  it('a zero weight first in the list is never picked either', () => {
    const rc = parseRouteConfiguration(
      wire(ROUTE_TYPE, {
        name: 'z',
        virtual_hosts: [
          {
            name: 'v',
            domains: ['*'],
            routes: [
              {
                match: { prefix: '/' },
                route: {
                  weighted_clusters: {
                    clusters: [
                      { name: 'zero', weight: { value: 0 } },
                      { name: 'one', weight: { value: 1 } },
                    ],
                  },
                },
              },
            ],
          },
        ],
      }),
    );
    const r = rc.virtualHosts[0]?.routes[0];
    assert.ok(r?.behaviour.kind === 'forward');
    const rand = seeded(1);
    for (let i = 0; i < 1000; i++) assert.equal(chooseCluster(r.behaviour.action.target, rand).name, 'one');
  });

  it('chooseCluster passes a single cluster through', () => {
    assert.deepEqual(chooseCluster({ kind: 'cluster', name: 'c' }), { name: 'c', weighted: undefined });
  });
});

describe('request header mutations', () => {
  it('route level removes then adds, config level overwrites last', () => {
    const d = selectRoute(reviews, req('reviews', '/'));
    assert.equal(d.kind, 'forward');
    if (d.kind !== 'forward') return;
    const out = applyHeaderMutations(
      { 'x-internal': 'secret', 'x-route': 'old', 'x-mesh': 'spoofed', keep: ['a', 'b'] },
      requestMutationLevels(reviews, d),
    );
    assert.equal(out['x-internal'], undefined);
    assert.deepEqual(out['x-route'], ['old', 'split']);
    assert.equal(out['x-mesh'], 'sockmesh');
    assert.deepEqual(out.keep, ['a', 'b']);
  });

  it('every append_action', () => {
    const rc = parseRouteConfiguration(
      wire(ROUTE_TYPE, {
        name: 'h',
        virtual_hosts: [
          {
            name: 'v',
            domains: ['*'],
            routes: [
              {
                match: { prefix: '/' },
                route: { cluster: 'c' },
                request_headers_to_add: [
                  { header: { key: 'a', value: '1' }, append_action: 'ADD_IF_ABSENT' },
                  { header: { key: 'b', value: '1' }, append_action: 'ADD_IF_ABSENT' },
                  { header: { key: 'c', value: '1' }, append_action: 'OVERWRITE_IF_EXISTS' },
                  { header: { key: 'd', value: '1' }, append_action: 'OVERWRITE_IF_EXISTS' },
                  { header: { key: 'e', value: '1' }, append: { value: false } },
                  { header: { key: 'f', value: '' } },
                  { header: { key: 'g', value: '' }, keep_empty_value: true },
                ],
              },
            ],
          },
        ],
      }),
    );
    const d = selectRoute(rc, req('x', '/'));
    assert.ok(d.kind === 'forward');
    const out = applyHeaderMutations({ a: '0', c: '0', e: '0' }, requestMutationLevels(rc, d));
    assert.deepEqual(out, { a: '0', b: '1', c: '1', e: '1', g: '' });
  });

  it('does not modify the input', () => {
    const input = { x: ['1'] };
    applyHeaderMutations(input, [
      {
        add: [{ key: 'x', value: '2', action: 'APPEND_IF_EXISTS_OR_ADD', keepEmptyValue: false }],
        remove: [],
      },
    ]);
    assert.deepEqual(input, { x: ['1'] });
  });
});

describe('hash keys', () => {
  it('header hash policy', () => {
    const d = selectRoute(reviews, req('reviews', '/items/7', { 'x-user': 'alice' }));
    assert.ok(d.kind === 'forward');
    assert.equal(
      hashKeyFor(d.action.hashPolicy, req('reviews', '/items/7', { 'x-user': 'alice' }), '10.1.1.1'),
      'alice',
    );
    assert.equal(hashKeyFor(d.action.hashPolicy, req('reviews', '/items/7'), '10.1.1.1'), undefined);
  });
  it('terminal stops, source ip and query', () => {
    const r = req('x', '/?u=bob', { h: 'v' });
    assert.equal(
      hashKeyFor(
        [
          { kind: 'query', name: 'u', terminal: false },
          { kind: 'source-ip', terminal: true },
          { kind: 'header', name: 'h', terminal: false },
        ],
        r,
        '1.2.3.4',
      ),
      'bob\u00001.2.3.4',
    );
  });
});

describe('RouteConfiguration validation', () => {
  const bad: Array<[string, Raw, RegExp]> = [
    [
      'weights summing to 0',
      { weighted_clusters: { clusters: [{ name: 'a', weight: { value: 0 } }] } },
      /sum of the weights/,
    ],
    [
      'total_weight not the sum',
      {
        weighted_clusters: { clusters: [{ name: 'a', weight: { value: 1 } }], total_weight: { value: 100 } },
      },
      /total_weight: is 100 but the weights add up to 1/,
    ],
    ['no cluster', { timeout: { seconds: 1 } }, /expected cluster or weighted_clusters/],
    ['cluster_header', { cluster_header: 'x' }, /expected cluster or weighted_clusters/],
  ];
  for (const [name, action, re] of bad) {
    it(`rejects ${name}`, () => {
      const raw = wire(ROUTE_TYPE, {
        name: 'bad',
        virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: action }] }],
      });
      assert.throws(
        () => parseRouteConfiguration(raw),
        (e: unknown) => isSockmeshError(e, 'SOCKMESH_E_XDS') && re.test(e.message),
      );
    });
  }

  it('names the path of the bad field', () => {
    const raw = wire(ROUTE_TYPE, {
      name: 'bad',
      virtual_hosts: [
        {
          name: 'v',
          domains: ['*'],
          routes: [
            { match: { prefix: '/' }, route: { cluster: 'c' } },
            { match: { safe_regex: { regex: '(?=x)' } }, route: { cluster: 'c' } },
          ],
        },
      ],
    });
    assert.throws(
      () => parseRouteConfiguration(raw),
      /RouteConfiguration "bad"\.virtual_hosts\[0\]\.routes\[1\]\.match\.safe_regex\.regex: regex "\(\?=x\)" uses lookaround/,
    );
  });

  it('rejects duplicate domains, redirects, runtime_fraction and non-objects', () => {
    assert.throws(
      () =>
        parseRouteConfiguration(
          wire(ROUTE_TYPE, {
            name: 'd',
            virtual_hosts: [
              { name: 'a', domains: ['x'] },
              { name: 'b', domains: ['X'] },
            ],
          }),
        ),
      /domain "x" is used twice/,
    );
    assert.throws(
      () =>
        parseRouteConfiguration(
          wire(ROUTE_TYPE, {
            name: 'd',
            virtual_hosts: [
              {
                name: 'a',
                domains: ['*'],
                routes: [{ match: { prefix: '/' }, redirect: { path_redirect: '/x' } }],
              },
            ],
          }),
        ),
      /redirect is not supported/,
    );
    assert.throws(
      () =>
        parseRouteConfiguration(
          wire(ROUTE_TYPE, {
            name: 'd',
            virtual_hosts: [
              {
                name: 'a',
                domains: ['*'],
                routes: [
                  {
                    match: { prefix: '/', runtime_fraction: { default_value: { numerator: 1 } } },
                    route: { cluster: 'c' },
                  },
                ],
              },
            ],
          }),
        ),
      /runtime_fraction is not supported/,
    );
    assert.throws(() => parseRouteConfiguration('nope'), /expected an object, got string "nope"/);
    assert.throws(
      () => parseRouteConfiguration({ name: 'x', virtual_hosts: {} }),
      /virtual_hosts: expected a list/,
    );
  });

  it('translates RE2 syntax: (?P<name>) groups and a leading (?i)', () => {
    const rc = parseRouteConfiguration(
      wire(ROUTE_TYPE, {
        name: 'r',
        virtual_hosts: [
          {
            name: 'v',
            domains: ['*'],
            routes: [
              { name: 'n', match: { safe_regex: { regex: '(?i)/(?P<id>[a-z]+)' } }, route: { cluster: 'c' } },
            ],
          },
        ],
      }),
    );
    assert.equal(forwardName(rc, req('x', '/ABC')), 'n');
    assert.equal(forwardName(rc, req('x', '/ABC1')), '404:no-route');
  });
});
