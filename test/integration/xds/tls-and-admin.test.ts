// mTLS on the TCP listener (real certificates from openssl), the plaintext guard, and the
// admin endpoint's apply over a real unix socket.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { credentials } from '@grpc/grpc-js';
import { isSockmeshError } from '../../../lib/errors.js';
import { nullLogger } from '../../../lib/log.js';
import { AdsClient } from '../../../xds/client/ads-client.js';
import { AdminServer } from '../../../xds/server/admin.js';
import { ControlPlane } from '../../../xds/server/control-plane.js';
import { DirectorySource } from '../../../xds/sources/directory.js';
import { adminCall, MESH, startControlPlane } from './helpers.js';

async function makePki(
  dir: string,
): Promise<Record<'ca' | 'serverCert' | 'serverKey' | 'clientCert' | 'clientKey', Buffer>> {
  const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = (name: string) =>
    ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`);
  ec('ca');
  ossl(
    'req',
    '-x509',
    '-new',
    '-key',
    'ca.key',
    '-subj',
    '/CN=sockmesh test CA',
    '-days',
    '1',
    '-out',
    'ca.pem',
  );
  for (const [name, san] of [
    ['server', 'IP:127.0.0.1'],
    ['client', 'URI:spiffe://cluster.local/ns/sockmesh-system/sa/agent'],
  ] as const) {
    ec(name);
    ossl('req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`);
    await writeFile(path.join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
    ossl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    );
  }
  const r = (f: string) => readFile(path.join(dir, f));
  return {
    ca: await r('ca.pem'),
    serverCert: await r('server.pem'),
    serverKey: await r('server.key'),
    clientCert: await r('client.pem'),
    clientKey: await r('client.key'),
  };
}

test('mTLS listener: a client with a CA-signed certificate gets config, one without cannot connect', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sockmesh-xds-tls-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const pki = await makePki(dir);
  await writeFile(path.join(dir, 'mesh.yaml'), MESH);
  const cp = new ControlPlane({
    source: new DirectorySource(dir),
    listen: [{ address: '127.0.0.1:0', tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca } }],
    logger: nullLogger,
  });
  t.after(() => cp.close());
  await cp.start();
  const target = cp.addresses()[0]!;

  const good = new AdsClient({
    target,
    node: { id: 'node1' },
    credentials: credentials.createSsl(pki.ca, pki.clientKey, pki.clientCert),
    logger: nullLogger,
  });
  t.after(() => good.close());
  const connected = once(good, 'connected');
  good.start();
  await connected;

  const anonymous = new AdsClient({
    target,
    node: { id: 'node2' },
    credentials: credentials.createSsl(pki.ca),
    logger: nullLogger,
    backoff: { initialMs: 50, maxMs: 100 },
  });
  t.after(() => anonymous.close());
  let updates = 0;
  anonymous.on('update', () => updates++);
  anonymous.start();
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(anonymous.isConnected, false);
  assert.equal(updates, 0);
  assert.deepEqual(
    cp.ads.clients().map((c) => c.node),
    ['node1'],
  );
});

test('plaintext TCP on a non-loopback address is refused before binding', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sockmesh-xds-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'mesh.yaml'), MESH);
  const cp = new ControlPlane({
    source: new DirectorySource(dir),
    listen: [{ address: '0.0.0.0:0' }],
    logger: nullLogger,
  });
  t.after(() => cp.close());
  await assert.rejects(cp.start(), (err) => isSockmeshError(err, 'SOCKMESH_E_CONFIG'));
});

test('admin apply: validates against the whole mesh, writes in place or to applied/, and pushes', async (t) => {
  const fx = await startControlPlane(t);
  const admin = new AdminServer(fx.cp);
  t.after(() => admin.close());
  const sock = path.join(path.dirname(fx.dir), 'admin.sock');
  await admin.listen(`unix:${sock}`);

  const bad = await adminCall(
    sock,
    '/v1/apply',
    'apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r, namespace: shop }\nspec:\n  parentRefs: [{ kind: Service, name: ratings }]\n',
  );
  assert.equal(bad.status, 422);
  assert.deepEqual(bad.json.messages, [
    '<apply>:5: spec.parentRefs[0].name: Service shop/ratings does not exist',
  ]);
  assert.deepEqual(await readdir(fx.dir), ['mesh.yaml']);

  const policy =
    'apiVersion: sockmesh.io/v1alpha1\nkind: TrafficPolicy\nmetadata: { name: reviews, namespace: shop }\nspec:\n  targetRef: { kind: Service, name: reviews }\n  loadBalancer: { type: LEAST_REQUEST }\n';
  const dry = await adminCall(sock, '/v1/apply?dryRun=true', policy);
  assert.equal(dry.status, 200);
  assert.deepEqual(await readdir(fx.dir), ['mesh.yaml']);
  const ok = await adminCall(sock, '/v1/apply', policy);
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.json.changes, [
    {
      object: 'TrafficPolicy/shop/reviews',
      action: 'created',
      file: 'applied/trafficpolicy-shop-reviews.yaml',
    },
  ]);
  assert.equal(ok.json.version, '2');

  const moved = MESH.split('---')
    .find((d) => d.includes('name: reviews-1'))!
    .replace('10.1.1.10', '10.1.1.42');
  const edit = await adminCall(sock, '/v1/apply', moved);
  assert.deepEqual(edit.json.changes, [
    { object: 'Pod/shop/reviews-1', action: 'configured', file: 'mesh.yaml' },
  ]);
  const text = await readFile(path.join(fx.dir, 'mesh.yaml'), 'utf8');
  assert.ok(
    text.includes('10.1.1.42') && text.includes('kind: Namespace') && text.includes('name: reviews-2'),
  );
  const again = await adminCall(sock, '/v1/apply', moved);
  assert.deepEqual(again.json.changes, [
    { object: 'Pod/shop/reviews-1', action: 'unchanged', file: 'mesh.yaml' },
  ]);

  const dump = await adminCall(sock, '/v1/config?node=node1');
  assert.ok(JSON.stringify(dump.json.endpoints).includes('10.1.1.42'));
  assert.ok(JSON.stringify(dump.json.clusters).includes('LEAST_REQUEST'));
});
