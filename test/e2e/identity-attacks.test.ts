/**
 * Identity attacks on a lab mesh (issue 17, part 4): real netns, real kernel capture, real
 * TLS with SVIDs from the mesh's own embedded CA. Each attack must be refused (or its claim
 * replaced by the identity the mTLS peer proved) and counted where the operator looks:
 * `sockmesh_identity_rejections_total{listener,reason}` and the kernel's `plaintextRefused`.
 * One mesh for the whole file; every attacker is a process in a pod or node netns.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CertificateAuthority } from '../../certs/ca/authority.js';
import { loadAuthority } from '../../certs/ca/store.js';
import { svidTlsMaterial } from '../../certs/index.js';
import type { LocalMesh } from '../../lab/mesh.js';
import type { LabTarget } from '../../lab/types.js';
import { identitySni } from '../../mesh-agent/tunnel/peer.js';
import { forgeLeaf, type Pem } from '../helpers/forged-svids.js';
import { FIXTURES } from '../helpers/lab.js';
import { call, eventually, metric, startShop } from '../helpers/mesh.js';

const TD = 'cluster.local';
const sa = (ns: string, name: string) => `spiffe://${TD}/ns/${ns}/sa/${name}`;
const FRONTEND = sa('shop', 'frontend');
const RATINGS = sa('shop', 'ratings');
const REVIEWS = sa('shop', 'reviews');
const FORGED_CALLER = sa('kube-system', 'admin');
const REJECTIONS = 'sockmesh_identity_rejections_total';

interface TunnelResult {
  status: number | null;
  body: string;
  error: string | null;
}

describe('identity attacks on a lab mesh: refused and counted', () => {
  let mesh: LocalMesh;
  let ca: CertificateAuthority;
  let caPem: { cert: string; key: string };
  let dir: string;
  let node2: string;
  let ratingsIp: string;

  before(async () => {
    mesh = await startShop([fileURLToPath(new URL('./manifests-identity/', import.meta.url))]);
    ca = await loadAuthority(mesh.paths.ca);
    caPem = {
      cert: readFileSync(join(mesh.paths.ca, 'ca.crt'), 'utf8'),
      key: readFileSync(join(mesh.paths.ca, 'ca.key'), 'utf8'),
    };
    dir = mkdtempSync(join(tmpdir(), 'sockmesh-identity-attacks-'));
    node2 = mesh.bed.node('node2').underlayIp;
    ratingsIp = mesh.pod('shop/ratings-1').ip;
  });
  after(async () => {
    await mesh?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  let files = 0;
  function credentials(pem: Pem): { cert: string; key: string } {
    const n = files++;
    const cert = join(dir, `${n}.crt`);
    const key = join(dir, `${n}.key`);
    writeFileSync(cert, pem.cert);
    writeFileSync(key, pem.key, { mode: 0o600 });
    return { cert, key };
  }

  /** One CONNECT to node2's tunnel from a pod (`ns/name`) or a netns, with whatever certificate. */
  async function tunnel(
    from: string | LabTarget,
    o: {
      pem?: Pem;
      servername?: string;
      authority?: string;
      headers?: Record<string, string>;
      send?: string;
      delayMs?: number;
      h2c?: { path: string; headers: Record<string, string> };
    },
  ): Promise<TunnelResult> {
    const spec = {
      host: node2,
      port: 15008,
      servername: o.servername ?? identitySni(RATINGS),
      authority: o.authority ?? `${ratingsIp}:9080`,
      ...(o.pem ? credentials(o.pem) : {}),
      ...(o.headers ? { headers: o.headers } : {}),
      ...(o.send ? { send: o.send } : {}),
      ...(o.delayMs ? { delayMs: o.delayMs } : {}),
      ...(o.h2c ? { h2c: o.h2c } : {}),
    };
    const argv = [process.execPath, join(FIXTURES, 'tunnel-client.mjs'), JSON.stringify(spec)];
    const res =
      typeof from === 'string'
        ? await mesh.exec(from, argv, 15_000)
        : await mesh.bed.exec(from, argv, { timeoutMs: 15_000 });
    assert.equal(res.code, 0, res.stderr);
    return JSON.parse(res.stdout) as TunnelResult;
  }

  /** The node agent's rejection counts by `listener/reason` (a scrape retried: the VM may be loaded). */
  async function rejections(node: string): Promise<Map<string, number>> {
    const text = await eventually(
      `${node} /metrics`,
      async () => (await mesh.agentGet(node, '/metrics')).body,
      (b) => b.length > 0,
      20_000,
    );
    const counts = new Map<string, number>();
    for (const m of text.matchAll(new RegExp(`^${REJECTIONS}\\{([^}]*)\\} (\\S+)$`, 'gm'))) {
      const labels = m[1]!;
      const key = `${/listener="([^"]*)"/.exec(labels)?.[1]}/${/reason="([^"]*)"/.exec(labels)?.[1]}`;
      counts.set(key, (counts.get(key) ?? 0) + Number(m[2]));
    }
    return counts;
  }

  /**
   * Waits until the counters moved by exactly `expected` (`listener/reason` -> increment) since
   * `before`; the agent counts as it closes, maybe after the client saw the close.
   */
  async function counted(node: string, before: Map<string, number>, expected: Record<string, number>) {
    const delta = (now: Map<string, number>) =>
      Object.fromEntries(Object.keys(expected).map((k) => [k, (now.get(k) ?? 0) - (before.get(k) ?? 0)]));
    const now = await eventually(
      `${node} ${REJECTIONS} ${JSON.stringify(expected)}`,
      () => rejections(node),
      (n) => Object.entries(delta(n)).every(([k, v]) => v >= expected[k]!),
    ).catch(() => rejections(node));
    assert.deepEqual(delta(now), expected, `${REJECTIONS} on ${node}`);
  }

  const genuine = async (id: string): Promise<Pem> => {
    const svid = await ca.issueSvid(id);
    const m = svidTlsMaterial(svid);
    return { cert: m.cert, key: m.key };
  };

  const forgedRequest = (extra = '') =>
    `GET /who HTTP/1.1\r\nhost: ratings\r\nx-forwarded-client-cert: By=${RATINGS};URI=${FORGED_CALLER}\r\n${extra}connection: close\r\n\r\n`;

  function callerIn(body: string): string | null {
    // The answer as the pod wrote it (maybe chunked): its one JSON object.
    const json = body.slice(body.indexOf('{'), body.lastIndexOf('}') + 1);
    return (JSON.parse(json) as { caller: string | null }).caller;
  }

  it("an app's own x-forwarded-client-cert never reaches the callee: it reads the caller the mesh proved", async () => {
    const before = await rejections('node1');
    const headers = { 'x-forwarded-client-cert': `By=${RATINGS};URI=${FORGED_CALLER}` };
    // ratings is on the other node (tunnel), reviews-v1 on the caller's (in-process).
    for (const url of ['http://ratings.shop:9080/', 'http://reviews-v1.shop:9080/']) {
      const res = await call(mesh, 'shop/frontend-1', url, { headers });
      assert.equal(res.status, 200, res.error ?? res.body);
      assert.equal(callerIn(res.body), FRONTEND, url);
    }
    // Through a TCP Service onto reviews-v1's HTTP port, on the caller's node: no tunnel, still parsed.
    const script = `const s=require('node:net').connect(9094,'reviews-v1-tcp.shop.svc.cluster.local',()=>s.write('GET / HTTP/1.0\\r\\nhost: x\\r\\nx-forwarded-client-cert: By=x;URI=${FORGED_CALLER}\\r\\n\\r\\n'));let d='';s.on('data',c=>d+=c);s.on('close',()=>process.stdout.write(d));s.on('error',e=>process.stdout.write(String(e.code)))`;
    const raw = await mesh.exec('shop/frontend-1', [process.execPath, '-e', script]);
    assert.match(raw.stdout, /^HTTP\/1\.1 200 /, raw.stdout || raw.stderr);
    assert.equal(callerIn(raw.stdout), FRONTEND, 'same node, TCP Service');
    await counted('node1', before, { 'outbound/forged-xfcc': 2, 'inbound/forged-xfcc': 1 });
  });

  it("a genuine SVID dialing 15008 itself cannot write the caller's identity, whatever its CONNECT says", async () => {
    const pem = await genuine(FRONTEND);
    const before = await rejections('node2');
    const variants: Array<[string, string | LabTarget, Record<string, string>, number?]> = [
      [
        'says it wrote the identity (xfcc=set)',
        'legacy/client',
        { baggage: 'sockmesh.protocol=http,sockmesh.xfcc=set' },
      ],
      ['says the stream is TCP', 'legacy/client', { baggage: 'sockmesh.protocol=tcp' }],
      [
        'says TCP and waits out the detection timeout',
        'legacy/client',
        { baggage: 'sockmesh.protocol=tcp' },
        400,
      ],
      ['says nothing', 'legacy/client', {}],
      [
        'forwarded for another pod, from a meshed pod (captured, passed through)',
        'shop/frontend-1',
        {
          baggage: 'k8s.namespace.name=kube-system,sockmesh.protocol=http,sockmesh.xfcc=set',
          forwarded: 'for="10.244.2.10:4000"',
        },
      ],
    ];
    for (const [what, from, headers, delayMs] of variants) {
      const r = await tunnel(from, { pem, headers, send: forgedRequest(), ...(delayMs ? { delayMs } : {}) });
      assert.equal(r.status, 200, `${what}: ${JSON.stringify(r)}`);
      assert.match(r.body, /^HTTP\/1\.1 200/, what);
      assert.equal(callerIn(r.body), FRONTEND, what);
    }
    // HTTP/2 (h2c) inside the tunnel, announced as TCP, to reviews-v2's h2c port (9091).
    const h2 = await tunnel('legacy/client', {
      pem,
      servername: identitySni(REVIEWS),
      authority: `${mesh.pod('shop/reviews-v2-1').ip}:9091`,
      headers: { baggage: 'sockmesh.protocol=tcp' },
      h2c: { path: '/who', headers: { 'x-forwarded-client-cert': `By=${RATINGS};URI=${FORGED_CALLER}` } },
    });
    assert.equal(h2.status, 200, JSON.stringify(h2));
    const answer = JSON.parse(h2.body) as { status: number; body: string };
    assert.equal(answer.status, 200, h2.body);
    assert.equal(callerIn(answer.body), FRONTEND, 'h2c');
    await counted('node2', before, { 'inbound/forged-xfcc': variants.length + 1 });
  });

  it('forged, expired, foreign and malformed SVIDs are refused at the handshake, each counted', async () => {
    const otherCa = await CertificateAuthority.createRoot({ trustDomain: TD });
    const foreignCa = await CertificateAuthority.createRoot({ trustDomain: 'evil.example' });
    const fromCa = (svid: Awaited<ReturnType<CertificateAuthority['issueSvid']>>): Pem => {
      const m = svidTlsMaterial(svid);
      return { cert: m.cert, key: m.key };
    };
    const cases: Array<[string, Pem | undefined, string]> = [
      ['no client certificate', undefined, 'no-client-certificate'],
      ['self-signed, naming the frontend', await forgeLeaf({ uris: [FRONTEND] }), 'untrusted-issuer'],
      ["another CA's, naming the frontend", fromCa(await otherCa.issueSvid(FRONTEND)), 'untrusted-issuer'],
      [
        'another trust domain (its own CA)',
        fromCa(await foreignCa.issueSvid('spiffe://evil.example/ns/shop/sa/frontend')),
        'untrusted-issuer',
      ],
      [
        'expired an hour ago',
        fromCa(await ca.issueSvid(FRONTEND, { now: Date.now() - 2 * 3_600_000, ttlMs: 3_600_000 })),
        'expired',
      ],
      [
        'another trust domain, signed by this CA',
        await forgeLeaf({ uris: ['spiffe://evil.example/ns/shop/sa/frontend'], issuer: caPem }),
        'wrong-trust-domain',
      ],
      ['two URI SANs', await forgeLeaf({ uris: [FRONTEND, REVIEWS], issuer: caPem }), 'several-uri-sans'],
      [
        'a URI that is no SPIFFE ID',
        await forgeLeaf({ uris: ['https://frontend.shop/'], issuer: caPem }),
        'bad-spiffe-id',
      ],
    ];
    const before = await rejections('node2');
    const expected: Record<string, number> = {};
    for (const [what, pem, reason] of cases) {
      const r = await tunnel('legacy/client', { ...(pem ? { pem } : {}), send: forgedRequest() });
      assert.equal(r.status, null, `${what}: no CONNECT may be answered: ${JSON.stringify(r)}`);
      assert.equal(r.body, '', what);
      expected[`tunnel/${reason}`] = (expected[`tunnel/${reason}`] ?? 0) + 1;
    }
    // From outside any pod: the node's own netns, no certificate.
    const r = await tunnel(mesh.bed.node('node1'), { send: forgedRequest() });
    assert.equal(r.status, null, JSON.stringify(r));
    expected['tunnel/no-client-certificate']! += 1;
    await counted('node2', before, expected);
  });

  it('a server name for another workload: refused at the handshake, or 421 when it is not the destination', async () => {
    const pem = await genuine(FRONTEND);
    // frontend has no pod on node2: nothing there answers to its name.
    const before = await rejections('node2');
    let r = await tunnel('legacy/client', { pem, servername: identitySni(FRONTEND), send: forgedRequest() });
    assert.equal(r.status, null, JSON.stringify(r));
    // reviews-v2 is on node2, but the CONNECT is for ratings.
    r = await tunnel('legacy/client', { pem, servername: identitySni(REVIEWS), send: forgedRequest() });
    assert.equal(r.status, 421, JSON.stringify(r));
    assert.equal(r.body, '');
    await counted('node2', before, { 'tunnel/unknown-server-name': 1, 'tunnel/sni-mismatch': 1 });
  });

  it('the capture port 15001 is no open proxy: dialed directly from a pod or another node, it closes', async () => {
    const gateway = mesh.bed.node('node1').gatewayIp;
    const before = await rejections('node1');
    const script = `const s=require('node:net').connect(15001,${JSON.stringify(gateway)});let n=0;s.on('data',d=>{n+=d.length});s.on('error',()=>{});s.on('close',()=>{console.log('closed, '+n+' bytes');process.exit(0)});s.write('GET http://${ratingsIp}:9080/ HTTP/1.1\\r\\nhost: ${ratingsIp}:9080\\r\\n\\r\\n');setTimeout(()=>{console.log('timeout, '+n+' bytes');process.exit(0)},5000)`;
    const fromPod = await mesh.exec('legacy/client', [process.execPath, '-e', script]);
    assert.equal(fromPod.stdout.trim(), 'closed, 0 bytes', fromPod.stderr);
    const fromNode = await mesh.bed.exec(mesh.bed.node('node2'), [process.execPath, '-e', script], {
      timeoutMs: 10_000,
    });
    assert.equal(fromNode.stdout.trim(), 'closed, 0 bytes', fromNode.stderr);
    await counted('node1', before, { 'outbound/not-captured': 2 });
  });

  it('plaintext straight to a strict pod is dropped in the kernel and counted', async () => {
    const scrape = async () =>
      metric((await mesh.agentGet('node2', '/metrics')).body, 'sockmesh_bpf_counter_total', {
        counter: 'plaintextRefused',
      });
    const before = await scrape();
    const res = await call(mesh, 'legacy/client', `http://${ratingsIp}:9080/`);
    assert.equal(res.status, 0, `no answer: ${JSON.stringify(res)}`);
    await eventually('node2 counted the dropped SYN', scrape, (v) => v > before);
  });
});
