/**
 * Per-peer state goes back down when peers leave: inbound pools of pods that left
 * the node, tunnel TLS contexts and tunnel sessions of identities or serials no
 * longer held, and a worker's ejection map after a config update. Real sockets
 * on loopback, real mTLS.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { nullLogger } from '../../../lib/log.js';
import { RemoteOutliers } from '../../../mesh-agent/agent/outliers.js';
import { ProxyRuntime } from '../../../mesh-agent/agent/proxy-runtime.js';
import type { AuthorizationCheck, LocalWorkload } from '../../../mesh-agent/inbound/policy.js';
import type { InboundServer } from '../../../mesh-agent/inbound/server.js';
import { MeshTelemetry } from '../../../mesh-agent/telemetry/mesh-telemetry.js';
import { identitySni } from '../../../mesh-agent/tunnel/peer.js';
import { TunnelPool } from '../../../mesh-agent/tunnel/pool.js';
import type { TunnelServer } from '../../../mesh-agent/tunnel/server.js';
import * as envoy from '../../unit/mesh-agent/fixtures/envoy.js';
import { type InboundTunnel, startInboundTunnel, throughTunnel } from './fixtures/inbound-tunnel.js';

const TD = 'pruning.test';
const id = (sa: string) => `spiffe://${TD}/ns/shop/sa/${sa}`;

async function until(what: string, cond: () => boolean): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('pruning: inbound pools and the tunnel', () => {
  let ca: CertificateAuthority;
  let frontend: X509Svid;
  let app: http.Server;
  let appPort = 0;
  let appOpen = 0;
  let tunnel: TunnelServer;
  let inbound: InboundServer;
  let tunnelAddr = '';
  let dest: InboundTunnel | undefined;
  const served = new Map<string, X509Svid>();
  let podHere = true;
  const reviews: LocalWorkload = {
    ip: '127.0.0.1',
    namespace: 'shop',
    name: 'reviews-v1',
    serviceAccount: 'reviews',
    spiffeId: id('reviews'),
    version: 'v1',
    protocolOf: () => 'http',
  };
  // A second pod of the node, on its own address: the tunnel answers a client that names it with its certificate.
  const ratings: LocalWorkload = { ...reviews, ip: '127.0.0.2', name: 'ratings-v1', spiffeId: id('ratings') };
  let ratingsApp: http.Server;
  let ratingsPort = 0;
  // A policy that reads paths: the inbound side parses HTTP and keeps a pool to the pod.
  const authz: AuthorizationCheck = { check: () => ({ allowed: true }), needsHttp: () => true };

  before(async () => {
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    frontend = await ca.issueSvid(id('frontend'));
    served.set(identitySni(id('reviews')), await ca.issueSvid(id('reviews')));
    served.set(identitySni(id('ratings')), await ca.issueSvid(id('ratings')));
    app = http.createServer((_req, res) => res.end('ok'));
    app.on('connection', (s: net.Socket) => {
      appOpen++;
      s.once('close', () => appOpen--);
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    appPort = (app.address() as net.AddressInfo).port;
    ratingsApp = http.createServer((_req, res) => res.end('ok'));
    ratingsApp.listen(0, ratings.ip);
    await once(ratingsApp, 'listening');
    ratingsPort = (ratingsApp.address() as net.AddressInfo).port;
    dest = await startInboundTunnel({
      ca,
      svids: (sni) => served.get(sni),
      workloads: {
        byIp: (ip) => (podHere && ip === reviews.ip ? reviews : ip === ratings.ip ? ratings : undefined),
      },
      authz,
    });
    ({ inbound, tunnel, address: tunnelAddr } = dest);
  });

  after(async () => {
    await dest?.close();
    app?.closeAllConnections();
    app?.close();
    ratingsApp?.closeAllConnections();
    ratingsApp?.close();
  });

  const through = (
    pool: TunnelPool,
    source: X509Svid,
    serverId: string,
    authority = `127.0.0.1:${appPort}`,
  ) =>
    throughTunnel(
      pool,
      { source, nodeAddress: tunnelAddr, expectedServerId: serverId, authority },
      { client: true },
    );

  it('a pod that left the node: its inbound pool closes its connections', async () => {
    const tp = new TunnelPool();
    const client = through(tp, frontend, id('reviews'));
    try {
      const res = await client.request({ path: '/', method: 'GET' });
      assert.equal(res.statusCode, 200);
      await res.body.text();
      assert.equal(appOpen, 1, 'one pooled connection from the inbound side to the pod');
      inbound.prune();
      assert.equal(appOpen, 1, 'kept while the pod is here');
      podHere = false;
      inbound.prune();
      await until('the pooled connection to the pod that left closes', () => appOpen === 0);
    } finally {
      podHere = true;
      await client.close();
      tp.close();
    }
  });

  it('tunnel TLS contexts and client sessions: only identities and serials held now are kept', async () => {
    const tp = new TunnelPool();
    const toReviews = through(tp, frontend, id('reviews'));
    const toRatings = through(tp, frontend, id('ratings'), `${ratings.ip}:${ratingsPort}`);
    try {
      for (const c of [toReviews, toRatings]) {
        const res = await c.request({ path: '/', method: 'GET' });
        await res.body.text();
      }
      assert.equal(tunnel.contextCount, 2);
      assert.equal(tp.size, 2);
      // ratings left the node: its context goes; reviews keeps its own.
      served.delete(identitySni(id('ratings')));
      assert.equal(tunnel.prune(), 1);
      assert.equal(tunnel.contextCount, 1);
      // frontend's SVID rotated: sessions with the old serial go (their streams finish first).
      const rotated = await ca.issueSvid(id('frontend'));
      assert.equal(
        tp.prune((sid) => (sid === id('frontend') ? frontend.serial : undefined)),
        0,
      );
      assert.equal(
        tp.prune((sid) => (sid === id('frontend') ? rotated.serial : undefined)),
        2,
      );
      assert.equal(tp.size, 0);
      // The open stream still answers: the old session drains, it is not cut.
      const res = await toReviews.request({ path: '/', method: 'GET' });
      assert.equal(res.statusCode, 200);
      await res.body.text();
    } finally {
      await toReviews.close();
      await toRatings.close();
      tp.close();
    }
  });
});

describe("pruning: a worker's ejection map follows the config", () => {
  it('ejections of a cluster not in the config (a late message) are dropped at the next update', async () => {
    const outliers = new RemoteOutliers(() => {});
    const telemetry = new MeshTelemetry({ nodeName: 'node-1', metricsPort: 0, logger: nullLogger });
    const runtime = new ProxyRuntime({
      nodeName: 'node-1',
      proxyIp: '127.0.0.1',
      tunnelIp: '127.0.0.1',
      ports: { outbound: 0, tunnel: 0 },
      origDst: { lookup: () => undefined },
      telemetry,
      cluster: { outliers, worker: { index: 0, count: 1 } },
      log: nullLogger,
    });
    const byName = (list: envoy.Raw[], key: 'name' | 'cluster_name') =>
      new Map(list.map((r) => [String(r[key]), r]));
    const config = {
      listeners: byName(envoy.snapshot.listeners, 'name'),
      routes: byName(envoy.snapshot.routes, 'name'),
      clusters: byName(envoy.snapshot.clusters, 'name'),
      endpoints: byName(envoy.snapshot.endpoints, 'cluster_name'),
      versions: { LDS: '1', RDS: '1', CDS: '1', EDS: '1' },
    };
    try {
      runtime.applyConfig(config);
      outliers.setEjected('reviews-v1', ['10.1.1.10:9080']);
      outliers.setEjected('outbound|9080||gone.shop.svc.cluster.local', ['10.9.9.9:9080']);
      assert.equal(outliers.size, 2);
      runtime.applyConfig(config);
      assert.equal(outliers.size, 1);
      assert.equal(
        outliers.isEjected('reviews-v1', '10.1.1.10:9080'),
        true,
        'a current cluster keeps its ejections',
      );
    } finally {
      await runtime.stop();
      await telemetry.close();
    }
  });
});
