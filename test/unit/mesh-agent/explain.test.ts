import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { captureOf } from '../../../mesh-agent/explain/explain.js';
import { explainRouting } from '../../../mesh-agent/explain/routes.js';
import { type HttpRequest, parseRouteConfiguration, selectRoute } from '../../../mesh-agent/routing/index.js';
import { pushedRoutes, routesOfPort } from '../fixtures/gateway-routes.js';
import { reviewsRoutes } from './fixtures/envoy.js';

const rc = parseRouteConfiguration(reviewsRoutes);
const req = (path: string, headers: Record<string, string> = {}, method = 'GET'): HttpRequest => ({
  authority: 'reviews',
  path,
  method,
  headers,
});
const service = (c: string) => c;

describe('explainRouting', () => {
  it('agrees with selectRoute on which route matches, for every request of the table', () => {
    const requests = [
      req('/'),
      req('/anything', { 'x-canary': 'true' }),
      req('/anything', { 'x-canary': 'false' }),
      req('/api/v1/health'),
      req('/api/v1/health', {}, 'POST'),
      req('/search?beta=1'),
      req('/search?beta=2'),
      req('/reviews/7'),
      { ...req('/'), authority: 'nothing.example' },
    ];
    for (const r of requests) {
      const d = selectRoute(rc, r);
      const e = explainRouting(rc, r, service);
      const matched = e.routes.filter((x) => x.result === 'matched');
      if (d.kind === 'forward') {
        assert.equal(matched.length, 1, JSON.stringify(r));
        assert.equal(matched[0]?.name, d.route.name ?? '');
        assert.equal(e.outcome.kind, 'forward');
      } else {
        assert.equal(e.outcome.kind, 'respond');
        if (e.outcome.kind === 'respond') assert.equal(e.outcome.reason, d.reason);
      }
      // Before the match every route says why it did not; after it, nothing was evaluated.
      const at = e.routes.findIndex((x) => x.result === 'matched');
      e.routes.forEach((x, i) => {
        if (at >= 0 && i > at) assert.equal(x.result, 'not-reached');
        if (at < 0 || i < at) assert.ok(x.result === 'no-match' && x.mismatch, JSON.stringify(x));
      });
    }
  });

  it('states the failed condition and what the request had', () => {
    const e = explainRouting(rc, req('/anything', { 'x-canary': 'false' }), service);
    const canary = e.routes.find((r) => r.name === 'canary-header');
    assert.equal(canary?.result, 'no-match');
    assert.equal(canary?.mismatch, 'header x-canary exact "true": the request has "false"');
    const none = explainRouting(rc, req('/anything'), service).routes.find((r) => r.name === 'canary-header');
    assert.equal(none?.mismatch, 'header x-canary exact "true": the request has none');
  });

  it('names the kind of Gateway API route a route was translated from (GRPCRoute, HTTPRoute)', () => {
    const grpc = explainRouting(
      parseRouteConfiguration(routesOfPort(9091)),
      req('/shop.Greeter/Hello', {}, 'POST'),
      service,
    );
    assert.deepEqual(
      grpc.routes.map((r) => [r.httpRoute, r.routeKind, r.rule, r.result]),
      [['shop/greeter', 'GRPCRoute', 0, 'matched']],
    );
    const web = explainRouting(parseRouteConfiguration(routesOfPort(9080)), req('/'), service);
    assert.deepEqual(
      web.routes.map((r) => [r.httpRoute, r.routeKind]),
      [['shop/greeter-web', 'HTTPRoute']],
    );
    // A Service's own route (no Gateway API route behind it) has no kind.
    const own = pushedRoutes().find((r) => (r as { name: string }).name.startsWith('greeter-v1.'));
    const d = explainRouting(parseRouteConfiguration(own), req('/'), service);
    assert.deepEqual(
      d.routes.map((r) => [r.name, r.httpRoute, r.routeKind]),
      [['default', null, null]],
    );
  });

  it('gives weighted targets their share of the total', () => {
    const e = explainRouting(rc, req('/'), service);
    assert.equal(e.outcome.kind, 'forward');
    if (e.outcome.kind !== 'forward') return;
    const total = e.outcome.targets.reduce((s, t) => s + t.share, 0);
    assert.ok(Math.abs(total - 1) < 1e-9);
  });
});

describe('captureOf (connect4 as the agent reads its maps)', () => {
  const cfg = {
    proxy: { ip: '10.244.1.1', port: 15001 },
    excludedPorts: [22],
    excludedCidrs: ['10.0.0.0/8'],
  };
  it('captures an enrolled caller to anything not excluded', () => {
    assert.equal(captureOf(true, '192.168.0.5', 80, cfg).captured, true);
    assert.match(captureOf(true, '192.168.0.5', 80, cfg).reason, /10\.244\.1\.1:15001/);
  });
  it('leaves alone what connect4 leaves alone, and says why', () => {
    assert.match(captureOf(false, '192.168.0.5', 80, cfg).reason, /not in the kernel's membership map/);
    assert.match(captureOf(true, '127.0.0.1', 80, cfg).reason, /loopback/);
    assert.match(captureOf(true, '10.244.1.1', 80, cfg).reason, /proxy's own address/);
    assert.match(captureOf(true, '192.168.0.5', 22, cfg).reason, /port 22 is excluded/);
    assert.match(captureOf(true, '10.1.2.3', 80, cfg).reason, /excluded range 10\.0\.0\.0\/8/);
    assert.match(captureOf(true, '192.168.0.5', 80, { ...cfg, proxy: undefined }).reason, /no proxy address/);
  });
});
