// Interop: the real proxyless gRPC client (@grpc/grpc-js-xds) bootstrapped at this
// control plane resolves xds:///reviews.shop:9080, follows the HTTPRoute weights and
// header match, and follows a weight change without a restart. Backends are two real
// gRPC servers on loopback that report who answered.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { ECHO_PATH, echoJson, grpcBackend, grpcMeshManifests } from './grpc-mesh.js';
import { startControlPlane } from './helpers.js';

test('grpc-js-xds follows HTTPRoute weights, header matches and live weight changes', async (t) => {
  const [p1, p2] = await Promise.all([grpcBackend(t, 'v1', '127.0.0.2'), grpcBackend(t, 'v2', '127.0.0.3')]);
  const fx = await startControlPlane(t, { 'mesh.yaml': grpcMeshManifests(p1, p2, 80, 20) });
  process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
    xds_servers: [{ server_uri: fx.tcp, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
    node: { id: 'interop-client', locality: { zone: 'node1' } },
  });
  const xds = await import('@grpc/grpc-js-xds');
  xds.register();
  const client = new grpc.Client('xds:///reviews.shop:9080', grpc.credentials.createInsecure());
  try {
    await exercise(client, fx, p1, p2);
  } finally {
    // Before the control plane goes away, so the xDS client has no watch left to retry.
    client.close();
  }
});

async function exercise(
  client: grpc.Client,
  fx: { write(file: string, text: string): Promise<void> },
  p1: number,
  p2: number,
): Promise<void> {
  const call = (meta?: Record<string, string>) =>
    new Promise<string>((resolve, reject) => {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(meta ?? {})) md.set(k, v);
      client.makeUnaryRequest(
        ECHO_PATH,
        echoJson.serialize,
        echoJson.deserialize,
        {},
        md,
        { deadline: Date.now() + 5000 },
        (err, res) => (err ? reject(err) : resolve(res!.backend)),
      );
    });
  const split = async (n: number) => {
    let v1 = 0;
    for (let i = 0; i < n; i++) if ((await call()) === 'v1') v1++;
    return v1 / n;
  };

  assert.ok(['v1', 'v2'].includes(await call()), 'first RPC through xDS');
  const before = await split(400);
  assert.ok(Math.abs(before - 0.8) < 0.08, `expected ~80% v1, got ${(before * 100).toFixed(1)}%`);

  for (let i = 0; i < 20; i++) assert.equal(await call({ 'x-canary': 'yes' }), 'v2');

  // GAMMA: the Service has routes, so a request none of them matches is rejected.
  const unmatched = await new Promise<grpc.ServiceError | null>((resolve) =>
    client.makeUnaryRequest(
      '/other.Other/Who',
      echoJson.serialize,
      echoJson.deserialize,
      {},
      new grpc.Metadata(),
      { deadline: Date.now() + 5000 },
      (err) => resolve(err),
    ),
  );
  assert.equal(unmatched?.code, grpc.status.UNAVAILABLE);
  assert.match(unmatched?.details ?? '', /Failed to route call/);

  await fx.write('mesh.yaml', grpcMeshManifests(p1, p2, 10, 90));
  // Wait (bounded) for the client to pick the new weights up, then measure.
  const deadline = Date.now() + 10_000;
  let after = await split(100);
  while (after > 0.4 && Date.now() < deadline) after = await split(100);
  after = await split(400);
  assert.ok(
    Math.abs(after - 0.1) < 0.06,
    `expected ~10% v1 after the change, got ${(after * 100).toFixed(1)}%`,
  );
}
