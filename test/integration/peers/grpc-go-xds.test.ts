/**
 * Interop: grpc-go's proxyless xDS client (google.golang.org/grpc/xds v1.85, built from the Go module
 * proxy) bootstrapped at this control plane's ADS unix socket resolves xds:///reviews.shop:9080 and
 * follows the HTTPRoute: the weights (within 3 sigma over 4000 RPCs), the header match, the GAMMA
 * "no rule matches" rejection, and a live weight change on the same channel with no failed RPC.
 * Backends are two real gRPC servers (grpc-js) on loopback that report who answered.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { grpcBackend, grpcMeshManifests } from '../xds/grpc-mesh.js';
import { startControlPlane } from '../xds/helpers.js';
import { goPeersBin, type PeerLine, startPeer } from './go-peers.js';

const N = 4000;
interface Calls {
  n: number;
  counts: Record<string, number>;
  errors: Record<string, number>;
}

/** v1's count must be within 3 sigma of the binomial mean for weight share p. */
function assertSplit(res: Calls, p: number, what: string): void {
  assert.deepEqual(res.errors, {}, `${what}: no failed RPC`);
  const v1 = res.counts.v1 ?? 0;
  assert.equal(v1 + (res.counts.v2 ?? 0), res.n, `${what}: only v1 and v2 answer`);
  const mean = res.n * p;
  const sigma = Math.sqrt(res.n * p * (1 - p));
  assert.ok(
    Math.abs(v1 - mean) <= 3 * sigma,
    `${what}: v1 answered ${v1} of ${res.n}; expected ${mean} +/- ${(3 * sigma).toFixed(1)} (3 sigma)`,
  );
  console.log(`${what}: v1 ${v1}/${res.n} (expected ${mean}, ${((v1 - mean) / sigma).toFixed(2)} sigma)`);
}

test('grpc-go xDS client follows HTTPRoute weights, header matches and a live weight change', async (t) => {
  const bin = await goPeersBin();
  // Each backend on its own loopback address, as each pod has its own IP.
  const [p1, p2] = await Promise.all([grpcBackend(t, 'v1', '127.0.0.2'), grpcBackend(t, 'v2', '127.0.0.3')]);
  const fx = await startControlPlane(t, { 'mesh.yaml': grpcMeshManifests(p1, p2, 80, 20) });
  // The bootstrap file grpc-go reads (gRFC A27): the ADS server is the control plane's unix socket.
  const bootstrap = join(fx.dir, '..', 'grpc-bootstrap.json');
  await writeFile(
    bootstrap,
    JSON.stringify({
      xds_servers: [
        { server_uri: fx.unix, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] },
      ],
      node: { id: 'grpc-go-interop', locality: { zone: 'node1' } },
    }),
  );
  const peer = startPeer(t, bin, 'xds-peer', ['-target', 'xds:///reviews.shop:9080'], {
    GRPC_XDS_BOOTSTRAP: bootstrap,
  });
  const ask = async (cmd: string): Promise<PeerLine> => {
    const line = await peer.ask(cmd);
    assert.notEqual(line.event, 'error', `${cmd}: ${JSON.stringify(line)} ${peer.stderr()}`);
    return line;
  };
  // The first line is "ready" (the channel exists; RPCs wait for the xDS resources).
  await peer.waitLines(1);
  assert.equal(peer.lines[0]!.event, 'ready', peer.stderr());

  assertSplit((await ask(`calls ${N}`)) as unknown as Calls, 0.8, 'weights 80/20');

  const canary = (await ask('calls 200 x-canary:yes')) as unknown as Calls;
  assert.deepEqual(canary.counts, { v2: 200 }, 'the header match sends every x-canary: yes RPC to v2');
  assert.deepEqual(canary.errors, {});

  // GAMMA: the Service has routes, so an RPC none of them matches is rejected by the client.
  const other = await ask('method /other.Other/Who');
  assert.equal(other.code, 'Unavailable', JSON.stringify(other));
  assert.match(String(other.message), /no matched route was found/);

  await fx.write('mesh.yaml', grpcMeshManifests(p1, p2, 10, 90));
  // The same channel picks the new weights up (bounded wait), with no failed RPC meanwhile.
  const changed = Date.now();
  const deadline = changed + 15_000;
  for (let rpcs = 200; ; rpcs += 200) {
    const r = (await ask('calls 200')) as unknown as Calls;
    assert.deepEqual(r.errors, {}, 'no failed RPC while the weights change');
    if ((r.counts.v1 ?? 0) / r.n < 0.3) {
      console.log(`weight change followed within ${rpcs} RPCs, ${Date.now() - changed} ms`);
      break;
    }
    assert.ok(Date.now() < deadline, 'the client did not follow the weight change within 15 s');
  }
  assertSplit((await ask(`calls ${N}`)) as unknown as Calls, 0.1, 'weights 10/90 after the change');

  peer.child.stdin!.end('quit\n');
  await peer.closed;
});
