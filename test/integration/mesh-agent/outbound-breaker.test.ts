/**
 * Circuit-breaker limits and pool pruning on real sockets: an OutboundServer on
 * loopback in front of upstreams that hold their answers until the test lets
 * them go, with the real ClusterRuntime (breaker, per-worker shares, balancer)
 * and InboundServer (same-node authorization). Only the kernel's original
 * destination and the route are fixed by the test.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { type ClusterContext, ClusterRuntime } from '../../../mesh-agent/agent/clusters.js';
import type { Endpoint as LbEndpoint } from '../../../mesh-agent/balancer/types.js';
import { type BreakerThresholds, DEFAULT_THRESHOLDS } from '../../../mesh-agent/breaker/thresholds.js';
import type { AuthorizationCheck } from '../../../mesh-agent/inbound/policy.js';
import { InboundServer } from '../../../mesh-agent/inbound/server.js';
import type { BreakerKind, OutboundPlan, RetryPlan } from '../../../mesh-agent/outbound/plan.js';
import { OutboundServer, type RequestRecord } from '../../../mesh-agent/outbound/server.js';
import type { ClusterSettings } from '../../../mesh-agent/state/cluster.js';
import { TunnelPool } from '../../../mesh-agent/tunnel/pool.js';
import { loopbackWorkloads } from './fixtures/outbound-harness.js';

const TD = 'breaker.test';
const SOURCE_ID = `spiffe://${TD}/ns/shop/sa/frontend`;
const DEST_ID = `spiffe://${TD}/ns/shop/sa/reviews`;
const NODE = 'node1';

/** An HTTP/1.1 upstream that holds every request while `hold` is set, and counts its connections. */
class HeldUpstream {
  hold = true;
  connections = 0;
  open = 0;
  requests = 0;
  private held: http.ServerResponse[] = [];
  readonly server = http.createServer((req, res) => {
    this.requests++;
    req.resume();
    if (this.hold) this.held.push(res);
    else res.writeHead(Number(req.headers['x-status'] ?? 200)).end('ok');
  });
  port = 0;
  constructor() {
    this.server.on('connection', (s) => {
      this.connections++;
      this.open++;
      s.once('close', () => this.open--);
    });
  }
  async start(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as AddressInfo).port;
  }
  get waiting(): number {
    return this.held.length;
  }
  releaseAll(): void {
    this.hold = false;
    for (const res of this.held.splice(0)) res.writeHead(200).end('ok');
  }
  close(): void {
    this.server.closeAllConnections();
    this.server.close();
  }
}

const lbEndpoint = (port: number): LbEndpoint => ({
  key: `127.0.0.1:${port}`,
  address: '127.0.0.1',
  port,
  locality: { zone: NODE },
  healthy: true,
  weight: 1,
  meta: { node: NODE, spiffeId: DEST_ID, pod: 'reviews-v1', namespace: 'shop', version: 'v1' },
});

function settings(limits: Partial<BreakerThresholds>): ClusterSettings {
  return {
    name: 'outbound|9080||reviews.shop.svc.cluster.local',
    discovery: 'EDS',
    edsServiceName: 'reviews',
    balancer: { policy: 'ROUND_ROBIN' },
    connectTimeoutMs: 1000,
    breaker: { ...DEFAULT_THRESHOLDS, ...limits },
    outlier: undefined,
    inlineEndpoints: undefined,
    meta: {},
  };
}

const ctx: ClusterContext = {
  outliers: { report: () => {}, isEjected: () => false },
  worker: { index: 0, count: 1 },
};

function httpPlan(
  cluster: ClusterRuntime,
  opts: { timeoutMs?: number; retry?: RetryPlan } = {},
): OutboundPlan {
  return {
    kind: 'http',
    service: 'reviews.shop',
    route: (req) => ({
      kind: 'forward',
      cluster,
      timeoutMs: opts.timeoutMs,
      idleTimeoutMs: undefined,
      retry: opts.retry,
      headers: { ...(req.headers as Record<string, string>) },
      hashKey: undefined,
      routeName: 'default',
    }),
  };
}

interface Proxy {
  port: number;
  outbound: OutboundServer;
  overflows: { cluster: string; kind: BreakerKind }[];
  records: RequestRecord[];
  plan: OutboundPlan | undefined;
  rotate(): Promise<void>;
  close(): Promise<void>;
}

async function startProxy(): Promise<Proxy> {
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  let svid: X509Svid = await ca.issueSvid(SOURCE_ID);
  const { destination, source } = loopbackWorkloads(SOURCE_ID, DEST_ID);
  const allowAll: AuthorizationCheck = { check: () => ({ allowed: true }), needsHttp: () => false };
  const inbound = new InboundServer({ workloads: { byIp: () => destination }, authz: allowAll });
  const tunnels = new TunnelPool();
  const p: Proxy = {
    port: 0,
    overflows: [],
    records: [],
    plan: undefined,
    outbound: undefined as unknown as OutboundServer,
    rotate: async () => {
      svid = await ca.issueSvid(SOURCE_ID);
    },
    close: async () => {
      await p.outbound.close();
      await inbound.close();
      tunnels.close();
    },
  };
  p.outbound = new OutboundServer({
    planner: { plan: () => p.plan!, endpointAt: () => undefined },
    origDst: { lookup: () => ({ ip: '10.96.0.20', port: 9080 }) },
    sources: { byIp: (ip) => (ip === '127.0.0.1' ? source : undefined) },
    svids: { svidFor: (id) => (id === SOURCE_ID ? svid : undefined) },
    tunnels,
    inbound,
    localWorkloads: { byIp: () => destination },
    events: {
      completed: (r) => p.records.push(r),
      breakerOverflow: (cluster, kind) => p.overflows.push({ cluster, kind }),
    },
  });
  p.port = (await p.outbound.listen(0, '127.0.0.1')).port;
  return p;
}

interface Reply {
  status: number;
  flags: string | undefined;
}

/** One request on its own keep-alive connection (concurrent requests need one connection each in HTTP/1.1). */
function get(port: number, agent: http.Agent, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', agent, headers }, (res) => {
      res.resume();
      res.once('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          flags: res.headers['x-sockmesh-flags'] as string | undefined,
        }),
      );
    });
    req.once('error', reject);
    req.end();
  });
}

/** Polls a condition the proxy reaches on its own (not a timing assumption); fails with `what` after 10 s. */
async function until(what: string, cond: () => boolean): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const count = (p: Proxy, kind: BreakerKind) => p.overflows.filter((o) => o.kind === kind).length;

describe('outbound breaker: HTTP/1.1 limits on real connections', () => {
  let proxy: Proxy;
  const upstream = new HeldUpstream();
  let agent: http.Agent;

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
  });
  // The plan is taken per captured connection (as the listener chain is): each test's plan needs new ones.
  beforeEach(() => {
    agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
  });
  afterEach(() => agent.destroy());
  after(async () => {
    await proxy?.close();
    upstream.close();
  });

  it('max_connections 2 + max_pending_requests 1, 5 concurrent slow requests: 2 connections, 1 pending served later, 2 refused UO', async () => {
    const rt = new ClusterRuntime(
      'c1',
      settings({ maxConnections: 2, maxPendingRequests: 1 }),
      [lbEndpoint(upstream.port)],
      NODE,
      ctx,
    );
    proxy.plan = httpPlan(rt);
    upstream.hold = true;
    const replies: Reply[] = [];
    const all = Array.from({ length: 5 }, () => get(proxy.port, agent).then((r) => replies.push(r)));
    await until('2 requests upstream, 1 pending, 2 refused', () => {
      const s = proxy.outbound.upstreamStats();
      return upstream.waiting === 2 && s.pending === 1 && replies.length === 2;
    });
    assert.deepEqual(
      replies.map((r) => [r.status, r.flags]),
      [
        [503, 'UO'],
        [503, 'UO'],
      ],
    );
    assert.equal(upstream.connections, 2);
    assert.equal(rt.breaker.inUse('connections'), 2);
    assert.equal(rt.breaker.inUse('pending'), 1);
    upstream.releaseAll();
    await Promise.all(all);
    assert.deepEqual(replies.map((r) => r.status).sort(), [200, 200, 200, 503, 503]);
    assert.equal(upstream.connections, 2, 'the pending request went on one of the two connections');
    assert.equal(upstream.requests, 3);
    assert.equal(count(proxy, 'pending'), 2, 'rq_pending_overflow: the two refused');
    assert.equal(
      count(proxy, 'connection'),
      3,
      'cx_overflow: every request that found both connections busy',
    );
    assert.equal(rt.breaker.overflowCount('pending'), 2);
    assert.equal(rt.breaker.inUse('pending'), 0);
    const refused = proxy.records.filter((r) => r.flags === 'UO');
    assert.equal(refused.length, 2);
    assert.ok(refused.every((r) => r.status === 503 && r.cluster === 'c1'));
    // Keep-alive: later requests reuse the two connections; nothing more is refused.
    for (let i = 0; i < 4; i++) assert.equal((await get(proxy.port, agent)).status, 200);
    assert.equal(upstream.connections, 2);
    assert.equal(count(proxy, 'pending'), 2);
  });

  it('a request pending longer than its route timeout is answered 504 UT', async () => {
    const rt = new ClusterRuntime(
      'c2',
      settings({ maxConnections: 1, maxPendingRequests: 5 }),
      [lbEndpoint(upstream.port)],
      NODE,
      ctx,
    );
    proxy.plan = httpPlan(rt, { timeoutMs: 300 });
    upstream.hold = true;
    const first = get(proxy.port, agent);
    await until('the first request upstream', () => upstream.waiting === 1);
    const second = await get(proxy.port, agent);
    assert.deepEqual(second, { status: 504, flags: 'UT' });
    assert.equal(rt.breaker.inUse('pending'), 0);
    upstream.releaseAll();
    // The first one was held past its own timeout too: it is answered 504 by the route timeout.
    await first;
  });

  it('max_requests 1: a second concurrent request is refused 503 UO at once', async () => {
    // Its own upstream: the previous test's pending request may get a connection just before its
    // deadline and reach the shared one late (Envoy dispatches such a request too), which would
    // count as a held request here.
    const mine = new HeldUpstream();
    await mine.start();
    const rt = new ClusterRuntime('c3', settings({ maxRequests: 1 }), [lbEndpoint(mine.port)], NODE, ctx);
    proxy.plan = httpPlan(rt);
    const before = count(proxy, 'request');
    // Fresh connections: a keep-alive one the previous test's 504 left may be closing (socket hang up).
    const own = new http.Agent({ keepAlive: true, maxSockets: 2 });
    try {
      const first = get(proxy.port, own);
      await until('the first request upstream', () => mine.waiting === 1);
      assert.deepEqual(await get(proxy.port, own), { status: 503, flags: 'UO' });
      assert.equal(count(proxy, 'request') - before, 1);
      mine.releaseAll();
      assert.equal((await first).status, 200);
      assert.equal(rt.breaker.inUse('requests'), 0);
    } finally {
      own.destroy();
      mine.close();
    }
  });

  it('max_retries 0: a retriable 503 is relayed flagged UO, counted as rq_retry_overflow', async () => {
    const rt = new ClusterRuntime('c4', settings({ maxRetries: 0 }), [lbEndpoint(upstream.port)], NODE, ctx);
    proxy.plan = httpPlan(rt, {
      retry: {
        numRetries: 2,
        perTryTimeoutMs: undefined,
        shouldRetry: (o) => o.kind === 'status' && o.status >= 500,
        backoffMs: () => 0,
      },
    });
    upstream.releaseAll();
    const seen = upstream.requests;
    const before = count(proxy, 'retry');
    assert.deepEqual(await get(proxy.port, agent, { 'x-status': '503' }), { status: 503, flags: 'UO' });
    assert.equal(upstream.requests - seen, 1, 'not retried');
    assert.equal(count(proxy, 'retry') - before, 1);
  });
});

describe('outbound breaker: TCP', () => {
  let proxy: Proxy;
  let echo: net.Server;
  let echoPort = 0;
  const held = new Set<net.Socket>();
  let accepted = 0;

  before(async () => {
    echo = net.createServer((s) => {
      accepted++;
      held.add(s);
      s.once('close', () => held.delete(s));
      s.pipe(s);
    });
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    echoPort = (echo.address() as AddressInfo).port;
    proxy = await startProxy();
  });
  after(async () => {
    await proxy?.close();
    for (const s of held) s.destroy();
    echo?.close();
  });

  const tcpPlan = (rt: ClusterRuntime): OutboundPlan => ({
    kind: 'tcp',
    service: 'db.shop',
    cluster: () => rt,
    idleTimeoutMs: undefined,
  });

  /** A TCP connection through the proxy that echoes one line back (or ends without one). */
  async function connect(): Promise<{ sock: net.Socket; echoed: Promise<string> }> {
    const sock = net.connect(proxy.port, '127.0.0.1');
    await once(sock, 'connect');
    sock.on('error', () => {});
    const echoed = new Promise<string>((resolve) => {
      let got = '';
      sock.on('data', (d: Buffer) => {
        got += d.toString();
        if (got.endsWith('\n')) resolve(got);
      });
      sock.once('close', () => resolve(got));
    });
    sock.write('ping\n');
    return { sock, echoed };
  }

  it('max_connections 1 + max_pending_requests 1: the second waits for the first to close, the third is closed (UO)', async () => {
    const rt = new ClusterRuntime(
      't1',
      settings({ maxConnections: 1, maxPendingRequests: 1 }),
      [lbEndpoint(echoPort)],
      NODE,
      { ...ctx },
    );
    proxy.plan = tcpPlan(rt);
    const a = await connect();
    assert.equal(await a.echoed, 'ping\n');
    const b = await connect();
    await until('the second connection pending', () => rt.breaker.inUse('pending') === 1);
    const c = await connect();
    assert.equal(await c.echoed, '', 'closed without reaching upstream');
    assert.equal(count(proxy, 'pending'), 1);
    assert.equal(accepted, 1);
    a.sock.destroy();
    assert.equal(await b.echoed, 'ping\n', 'served once the first one closed');
    assert.equal(accepted, 2);
    b.sock.destroy();
    await until('records of the refused connection', () => proxy.records.some((r) => r.flags === 'UO'));
    await until('slots released', () => rt.breaker.inUse('connections') === 0);
  });

  it("tcp_proxy's idle timeout closes a connection silent that long, not one that keeps talking", {
    timeout: 20_000,
  }, async () => {
    const rt = new ClusterRuntime('t2', settings({}), [lbEndpoint(echoPort)], NODE, { ...ctx });
    proxy.plan = { kind: 'tcp', service: 'db.shop', cluster: () => rt, idleTimeoutMs: 400 };
    const silent = await connect();
    const talking = await connect();
    assert.equal(await silent.echoed, 'ping\n');
    assert.equal(await talking.echoed, 'ping\n');
    let talkingClosed = false;
    talking.sock.once('close', () => {
      talkingClosed = true;
    });
    const silentClosed = once(silent.sock, 'close');
    const ping = setInterval(() => talking.sock.write('.'), 50);
    try {
      await silentClosed;
      // The talking one has outlived the silent one's timeout by as much again.
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(talkingClosed, false, 'traffic keeps a connection open');
    } finally {
      clearInterval(ping);
    }
    const closed = once(talking.sock, 'close');
    await closed;
    await until('slots released', () => rt.breaker.inUse('connections') === 0);
  });
});

describe('outbound pools are pruned when endpoints leave and SVIDs rotate', () => {
  let proxy: Proxy;
  const a = new HeldUpstream();
  const b = new HeldUpstream();
  let h2: http2.Http2Server;
  let h2port = 0;
  let agent: http.Agent;

  before(async () => {
    await Promise.all([a.start(), b.start()]);
    a.hold = false;
    b.hold = false;
    h2 = http2.createServer();
    h2.on('stream', (s) => {
      s.on('error', () => {});
      s.respond({ ':status': 200 });
      s.end('ok');
    });
    h2.listen(0, '127.0.0.1');
    await once(h2, 'listening');
    h2port = (h2.address() as AddressInfo).port;
    proxy = await startProxy();
    agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  });
  after(async () => {
    agent?.destroy();
    await proxy?.close();
    a.close();
    b.close();
    h2?.close();
  });

  it('an endpoint that left its cluster loses its pool and connections; a rotation drops the rest', async () => {
    const rt = new ClusterRuntime('p1', settings({}), [lbEndpoint(a.port), lbEndpoint(b.port)], NODE, ctx);
    proxy.plan = httpPlan(rt);
    for (let i = 0; i < 4; i++) assert.equal((await get(proxy.port, agent)).status, 200);
    assert.equal(a.open + b.open, 2);
    assert.deepEqual(proxy.outbound.upstreamStats(), {
      pools: 2,
      connections: 2,
      pending: 0,
      h2cSessions: 0,
    });
    assert.equal(rt.breaker.inUse('connections'), 2);
    rt.update(settings({}), [lbEndpoint(a.port)]);
    proxy.outbound.prune((c) => (c === 'p1' ? rt.endpointKeys() : undefined));
    assert.deepEqual(proxy.outbound.upstreamStats(), {
      pools: 1,
      connections: 1,
      pending: 0,
      h2cSessions: 0,
    });
    await until('the connection to the endpoint that left is closed', () => b.open === 0);
    assert.equal(rt.breaker.inUse('connections'), 1);
    await proxy.rotate();
    proxy.outbound.prune((c) => (c === 'p1' ? rt.endpointKeys() : undefined));
    assert.equal(proxy.outbound.upstreamStats().pools, 0);
    await until('the connection with the old SVID is closed', () => a.open === 0);
    assert.equal(rt.breaker.inUse('connections'), 0);
    // The next request opens a connection with the current SVID.
    assert.equal((await get(proxy.port, agent)).status, 200);
    assert.equal(proxy.outbound.upstreamStats().pools, 1);
  });

  it('h2c sessions count as connections and are pruned likewise', async () => {
    const rt = new ClusterRuntime('p2', settings({}), [lbEndpoint(h2port)], NODE, ctx);
    agent.destroy();
    proxy.plan = httpPlan(rt);
    const client = http2.connect(`http://127.0.0.1:${proxy.port}`);
    try {
      const call = () =>
        new Promise<number>((resolve, reject) => {
          const s = client.request({ ':path': '/' });
          s.on('response', (h) => resolve(Number(h[':status'])));
          s.on('error', reject);
          s.resume();
        });
      assert.deepEqual(await Promise.all([call(), call(), call()]), [200, 200, 200]);
      assert.equal(proxy.outbound.upstreamStats().h2cSessions, 1);
      assert.equal(rt.breaker.inUse('connections'), 1, 'one session, one connection');
      rt.update(settings({}), []);
      proxy.outbound.prune((c) => (c === 'p2' ? rt.endpointKeys() : undefined));
      assert.equal(proxy.outbound.upstreamStats().h2cSessions, 0);
      await until('the session closed and its slot freed', () => rt.breaker.inUse('connections') === 0);
    } finally {
      client.close();
    }
  });
});
