// Bad input to a running control plane: through the admin endpoint (what `sockmesh apply`
// sends) and through the watched directory. Every manifest problem is the sender's error
// (400 when the body is not readable YAML, 422 when it is invalid, 413 when too big), never
// a 500, and the served version and resources stay what they were.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { AdminClient } from '../../../xds/client/admin.js';
import { AdminServer } from '../../../xds/server/admin.js';
import { formatConfigError } from '../../../xds/sources/source.js';
import { adminCall, startControlPlane } from './helpers.js';

const ROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: reviews, port: 9080 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /api } }]
      backendRefs: [{ name: reviews, port: 9080 }]
`;

test('admin apply: YAML errors are 400, invalid manifests 422, a too-big body 413; nothing changes', async (t) => {
  const fx = await startControlPlane(t);
  const admin = new AdminServer(fx.cp);
  t.after(() => admin.close());
  const sock = path.join(path.dirname(fx.dir), 'admin.sock');
  await admin.listen(`unix:${sock}`);
  const before = await adminCall(sock, '/v1/config?node=node1');
  assert.equal(before.status, 200);

  const alias = await adminCall(sock, '/v1/apply', ROUTE.replace('name: r,', 'name: *r,'));
  assert.equal(alias.status, 400);
  assert.deepEqual(alias.json.messages, [
    '<apply>:3: YAML syntax: Unresolved alias (the anchor must be set before the alias): r',
  ]);
  const syntax = await adminCall(sock, '/v1/apply', 'kind: [\n');
  assert.equal(syntax.status, 400);
  assert.match((syntax.json.messages as string[])[0]!, /^<apply>:\d+: YAML syntax: /);

  const typo = await adminCall(sock, '/v1/apply', `weigth: 5\n${ROUTE}`);
  assert.equal(typo.status, 422);
  assert.deepEqual(typo.json.messages, [
    '<apply>:1: weigth: unknown field (expected one of: apiVersion, kind, metadata, spec, status)',
  ]);
  const minus = await adminCall(
    sock,
    '/v1/apply',
    ROUTE.replace('path: { type: PathPrefix, value: /api }', 'path: -1'),
  );
  assert.equal(minus.status, 422);
  assert.deepEqual(minus.json.messages, [
    '<apply>:7: spec.rules[0].matches[0].path: must be a map, got number -1',
  ]);

  const big = await adminCall(sock, '/v1/apply', Buffer.alloc(9 * 1024 * 1024, 0x61));
  assert.equal(big.status, 413);

  const after = await adminCall(sock, '/v1/config?node=node1');
  assert.equal(after.json.version, before.json.version);
  assert.deepEqual(after.json, before.json);

  // The client `sockmesh apply` uses reads a 400 as a rejection (exit 1), not as a failure to talk.
  const client = new AdminClient(`unix:${sock}`);
  t.after(() => client.close());
  const r = await client.apply('a: *b\n');
  assert.equal(r.applied, false);
  assert.match(r.messages?.[0] ?? '', /Unresolved alias/);
});

test('directory: a file with an unresolved alias is rejected with its line; the last good config stays', async (t) => {
  const fx = await startControlPlane(t);
  const version = fx.cp.snapshot?.version;
  const reload = fx.nextReload();
  await fx.write('bad.yaml', 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: *missing\n');
  const r = await reload;
  assert.equal(r.applied, false);
  assert.deepEqual(r.errors?.map(formatConfigError), [
    'bad.yaml:4: YAML syntax: Unresolved alias (the anchor must be set before the alias): missing',
  ]);
  assert.equal(fx.cp.snapshot?.version, version);
});
