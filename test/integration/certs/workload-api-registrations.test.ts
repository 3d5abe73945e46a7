import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { verifyPeer } from '../../../certs/verify.js';
import { WorkloadApiClient } from '../../../certs/workload-api/client.js';
import { RegistrationEntitlements } from '../../../certs/workload-api/entitlements.js';
import { EmbeddedSvidProvider } from '../../../certs/workload-api/provider.js';
import { parseRegistrations, type RegistrationTable } from '../../../certs/workload-api/registrations.js';
import { cgroupV2PathOf } from '../../../certs/workload-api/resolver.js';
import { WorkloadApiServer } from '../../../certs/workload-api/server.js';
import { WorkloadApiX509Source } from '../../../certs/workload-api/x509-source.js';
import { nullLogger } from '../../../lib/log.js';

const FRONTEND = 'spiffe://example.org/ns/shop/sa/frontend';
const REVIEWS = 'spiffe://example.org/ns/shop/sa/reviews';
const FAST = { initialMs: 50, maxMs: 200 };

async function until(what: string, ok: () => boolean, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A table granting this very process (its uid and cgroup, as the kernel reports them) both IDs. */
async function tableForThisProcess(ids: string[]): Promise<RegistrationTable> {
  const cgroup = await cgroupV2PathOf(process.pid);
  assert.ok(cgroup, 'this process has a cgroup v2 path');
  const uid = process.getuid?.() ?? 0;
  return parseRegistrations(
    'test.yaml',
    `entries:\n  - selectors: {cgroup: ${JSON.stringify(cgroup)}, uid: ${uid}}\n    spiffeIds: ${JSON.stringify(ids)}\n`,
  );
}

describe('Workload API: one caller entitled to several identities, and a source that follows it', () => {
  let dir = '';
  let socketPath = '';
  let ca: CertificateAuthority;
  let partner: CertificateAuthority;
  const cleanups: Array<() => unknown> = [];

  async function serve(ttlMs: number, table: RegistrationTable) {
    const provider = new EmbeddedSvidProvider(ca, { ttlMs, logger: nullLogger });
    const entitlements = new RegistrationEntitlements(table, provider);
    const server = new WorkloadApiServer({
      socketPath,
      entitlements,
      federatedBundles: () => [partner.bundle],
      logger: nullLogger,
    });
    await server.start();
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      await server.stop();
      provider.close();
    };
    cleanups.push(stop);
    return { provider, entitlements, server, stop };
  }

  function follow() {
    const client = new WorkloadApiClient({ address: `unix://${socketPath}` });
    const source = new WorkloadApiX509Source(client, { logger: nullLogger, backoff: FAST });
    cleanups.push(() => {
      source.stop();
      client.close();
    });
    return source;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sockmesh-test-wlreg-'));
    socketPath = join(dir, 'agent.sock');
    ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    partner = await CertificateAuthority.createRoot({ trustDomain: 'partner.example' });
  });

  after(async () => {
    for (const c of cleanups.reverse()) await c();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('sends every granted SVID in one response, each verifiable, with the federated bundles', async () => {
    const srv = await serve(3_600_000, await tableForThisProcess([FRONTEND, REVIEWS]));
    try {
      const source = follow();
      const ctx = await source.start();
      assert.deepEqual(
        ctx.svids.map((s) => s.spiffeId.uri),
        [FRONTEND, REVIEWS],
        'both IDs, in table order',
      );
      for (const s of ctx.svids) assert.ok(verifyPeer([...s.chain], ca.bundle).ok);
      assert.deepEqual(
        ctx.federatedBundles.map((b) => b.trustDomain),
        ['partner.example'],
      );
      assert.ok(source.bundleFor('partner.example')?.certs[0]?.equals(partner.bundle.certs[0]!));
      assert.ok(source.bundleFor('example.org')?.certs[0]?.equals(ca.bundle.certs[0]!));
      const client = new WorkloadApiClient({ address: `unix://${socketPath}` });
      try {
        const bundles = await client.fetchX509Bundles();
        assert.deepEqual(bundles.map((b) => b.trustDomain).sort(), ['example.org', 'partner.example']);
      } finally {
        client.close();
      }
    } finally {
      await srv.stop();
    }
  });

  it('pushes a rotation of any identity, and tells that identity’s subscribers', async () => {
    const srv = await serve(3_600_000, await tableForThisProcess([FRONTEND, REVIEWS]));
    try {
      const source = follow();
      await source.start();
      const before = source.svidFor(REVIEWS)!.serial;
      const seen: Array<X509Svid | null> = [];
      source.sourceFor(REVIEWS).subscribe((s) => seen.push(s));
      await srv.provider.rotateAll();
      await until('rotated SVIDs arrive', () => source.svidFor(REVIEWS)?.serial !== before);
      assert.ok(seen.length >= 1 && seen.at(-1)?.serial === source.svidFor(REVIEWS)!.serial);
      assert.equal(source.status().connected, true);
    } finally {
      await srv.stop();
    }
  });

  it('keeps serving the last SVIDs through a server restart, then takes the new ones', async () => {
    const table = await tableForThisProcess([FRONTEND, REVIEWS]);
    const first = await serve(3_600_000, table);
    const source = follow();
    await source.start();
    const serials = source.context().svids.map((s) => s.serial);
    await first.stop();
    await until('the source notices the outage', () => !source.status().connected);
    assert.deepEqual(
      source.context().svids.map((s) => s.serial),
      serials,
      'the last good SVIDs are still served',
    );
    const second = await serve(3_600_000, table);
    try {
      await until('reconnected to the restarted server', () => source.status().connected);
      const now = source.context().svids;
      assert.deepEqual(
        now.map((s) => s.spiffeId.uri),
        [FRONTEND, REVIEWS],
      );
      assert.ok(
        now.every((s, i) => s.serial !== serials[i]),
        'the new server issued new SVIDs',
      );
    } finally {
      await second.stop();
    }
  });

  it('stops serving an SVID the moment it expires when no replacement can be fetched', async () => {
    const srv = await serve(1500, await tableForThisProcess([FRONTEND]));
    const source = follow();
    await source.start();
    const gone: Array<X509Svid | null> = [];
    source.sourceFor(FRONTEND).subscribe((s) => gone.push(s));
    await srv.stop();
    const notAfter = source.svidFor(FRONTEND)?.notAfter.getTime() ?? 0;
    await until('subscribers heard that the identity is gone', () => gone.at(-1) === null, 4000);
    assert.ok(Date.now() >= notAfter, 'not before its notAfter');
    assert.equal(source.svidFor(FRONTEND), null);
    assert.equal(source.status().connected, false);
  });

  it('drops every SVID when the server revokes the grant (PERMISSION_DENIED), not on an outage', async () => {
    const srv = await serve(3_600_000, await tableForThisProcess([FRONTEND, REVIEWS]));
    try {
      const source = follow();
      await source.start();
      srv.entitlements.setTable(
        parseRegistrations(
          't.yaml',
          'entries:\n  - selectors: {uid: 4242}\n    spiffeIds: [spiffe://example.org/x]\n',
        ),
      );
      await srv.server.refresh();
      await until('revoked', () => source.context().svids.length === 0);
      assert.match(source.status().lastError ?? '', /no identity/);
    } finally {
      await srv.stop();
    }
  });
});
