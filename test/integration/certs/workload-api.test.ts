import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import { certificateFacts, verifyPeer } from '../../../certs/verify.js';
import { WorkloadApiClient } from '../../../certs/workload-api/client.js';
import { WORKLOAD_HEADER, workloadClientConstructor } from '../../../certs/workload-api/proto.js';
import { EmbeddedSvidProvider } from '../../../certs/workload-api/provider.js';
import { CgroupWorkloadResolver, cgroup2MountPoint } from '../../../certs/workload-api/resolver.js';
import { WorkloadApiServer } from '../../../certs/workload-api/server.js';
import { nullLogger } from '../../../lib/log.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/workload-client.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

describe('SPIFFE Workload API over a real unix socket', () => {
  const cgName = `sockmesh-test-${randomBytes(4).toString('hex')}`;
  let cgDir = '';
  let dir = '';
  let socketPath = '';
  let ca: CertificateAuthority;
  let provider: EmbeddedSvidProvider;
  let server: WorkloadApiServer;
  const children: ChildProcess[] = [];

  before(async () => {
    const mount = await cgroup2MountPoint();
    assert.ok(mount, 'a cgroup2 mount is needed');
    cgDir = join(mount, cgName);
    await mkdir(cgDir);
    dir = await mkdtemp(join(tmpdir(), 'sockmesh-test-wl-'));
    socketPath = join(dir, 'agent.sock');
    ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    provider = new EmbeddedSvidProvider(ca, { ttlMs: 3000, logger: nullLogger });
    const resolver = new CgroupWorkloadResolver();
    resolver.set(`/${cgName}`, { namespace: 'shop', serviceAccount: 'cart', podName: 'cart-7d9f' });
    server = new WorkloadApiServer({ socketPath, resolver, provider, logger: nullLogger });
    await server.start();
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await server?.stop();
    provider?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
    // A cgroup can be removed once its last process has gone; give a killed child a moment.
    for (let i = 0; cgDir && i < 50; i++) {
      try {
        await rmdir(cgDir);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
        await sleep(100);
      }
    }
  });

  function rawClient(): grpc.Client {
    const Ctor = workloadClientConstructor();
    return new Ctor(`unix://${socketPath}`, grpc.credentials.createInsecure());
  }

  function firstStreamResult(
    client: grpc.Client,
    method: string,
    md: grpc.Metadata,
  ): Promise<grpc.ServiceError | 'data'> {
    return new Promise((resolve) => {
      const fn = (
        client as unknown as Record<
          string,
          (r: object, m: grpc.Metadata) => grpc.ClientReadableStream<unknown>
        >
      )[method]!;
      const s = fn.call(client, {}, md);
      s.on('data', () => {
        s.cancel();
        resolve('data');
      });
      s.on('error', (err: grpc.ServiceError) => resolve(err));
    });
  }

  it('serves a workload identified by its cgroup, and pushes the rotated SVID on the stream', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
      cwd: ROOT,
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${socketPath}` },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    // Move the real process into the pod cgroup before it makes its first call.
    await writeFile(join(cgDir, 'cgroup.procs'), String(child.pid));
    child.stdin!.write('go\n');
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 0);
    const res = JSON.parse(out.trim()) as {
      error?: string;
      bundles: string[];
      seen: Array<{
        spiffeId: string;
        serial: string;
        chain: string[];
        bundle: string[];
        keyMatches: boolean;
      }>;
    };
    assert.equal(res.error, undefined, `workload got an error: ${res.error}`);
    assert.deepEqual(res.bundles, ['example.org']);
    assert.ok(res.seen.length >= 2);
    const serials = new Set(res.seen.map((s) => s.serial));
    assert.ok(serials.size >= 2, 'a rotation was pushed on the open stream');
    for (const s of res.seen) {
      assert.equal(s.spiffeId, 'spiffe://example.org/ns/shop/sa/cart');
      assert.equal(s.keyMatches, true, 'x509_svid_key is the PKCS#8 key of the leaf');
      const chain = s.chain.map((b) => Buffer.from(b, 'base64'));
      const bundle = { trustDomain: 'example.org', certs: s.bundle.map((b) => Buffer.from(b, 'base64')) };
      assert.ok(bundle.certs[0]!.equals(ca.bundle.certs[0]!));
      // Verified as of its issuance: with a 3 s TTL it may have expired by now.
      const v = verifyPeer(chain, bundle, { now: certificateFacts(chain[0]!).notBefore.getTime() });
      assert.ok(v.ok, JSON.stringify(v));
    }
  });

  it('refuses a call without the workload.spiffe.io header with InvalidArgument', async () => {
    const client = rawClient();
    try {
      const res = await firstStreamResult(client, 'FetchX509SVID', new grpc.Metadata());
      assert.notEqual(res, 'data');
      assert.equal((res as grpc.ServiceError).code, grpc.status.INVALID_ARGUMENT);
      assert.match((res as grpc.ServiceError).details, /workload\.spiffe\.io/);
      const wrong = new grpc.Metadata();
      wrong.set(WORKLOAD_HEADER, 'yes');
      const res2 = await firstStreamResult(client, 'FetchX509Bundles', wrong);
      assert.equal((res2 as grpc.ServiceError).code, grpc.status.INVALID_ARGUMENT);
    } finally {
      client.close();
    }
  });

  it('denies a caller that is not in a meshed workload, whatever it sends', async () => {
    // This test process is in no registered pod cgroup.
    const client = new WorkloadApiClient({ address: `unix://${socketPath}` });
    try {
      await assert.rejects(client.fetchX509Context(), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.PERMISSION_DENIED);
        return true;
      });
      await assert.rejects(client.fetchX509Bundles(), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.PERMISSION_DENIED);
        return true;
      });
    } finally {
      client.close();
    }
  });

  it('answers the JWT methods with Unimplemented', async () => {
    const client = rawClient();
    try {
      const md = new grpc.Metadata();
      md.set(WORKLOAD_HEADER, 'true');
      const err = await new Promise<grpc.ServiceError | null>((resolve) => {
        (client as unknown as Record<string, (...a: unknown[]) => void>).FetchJWTSVID!.call(
          client,
          { audience: ['x'] },
          md,
          (e: grpc.ServiceError | null) => resolve(e),
        );
      });
      assert.equal(err?.code, grpc.status.UNIMPLEMENTED);
      const res = await firstStreamResult(client, 'FetchJWTBundles', md);
      assert.equal((res as grpc.ServiceError).code, grpc.status.UNIMPLEMENTED);
    } finally {
      client.close();
    }
  });
});
