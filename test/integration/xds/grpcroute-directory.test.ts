// A GRPCRoute in a manifests directory, through the real DirectorySource and control plane: its
// split and method match are served as RDS; an edit that breaks it is refused with file:line and
// field, and the last good routes stay served; the fix is served again.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeResource } from '../../../xds/codec.js';
import { ROUTE_TYPE } from '../../../xds/protos.js';
import { formatConfigError } from '../../../xds/sources/source.js';
import { MESH, startControlPlane } from './helpers.js';

const GRPC_SERVICES = ['greeter', 'greeter-v1', 'greeter-v2']
  .map(
    (name, i) => `---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: shop }
spec:
  clusterIP: 10.96.1.${10 + i}
  selector: { app: reviews }
  ports: [{ name: grpc, port: 9091, appProtocol: grpc }]
`,
  )
  .join('');

const route = (v1: number, v2: number, backend2 = 'greeter-v2') => `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: greeter, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: greeter, port: 9091 }]
  rules:
    - matches: [{ method: { service: helloworld.Greeter } }]
      backendRefs:
        - { name: greeter-v1, port: 9091, weight: ${v1} }
        - { name: ${backend2}, port: 9091, weight: ${v2} }
`;

const RC = 'greeter.shop.svc.cluster.local:9091';

test('a GRPCRoute file is served as RDS; a broken edit is refused by file:line and field, the last good stays', async (t) => {
  const f = await startControlPlane(t, { 'mesh.yaml': MESH + GRPC_SERVICES });
  const served = () => {
    const r = f.cp.snapshot?.wildcard(ROUTE_TYPE, 'node1').get(RC);
    if (!r) return undefined;
    const rc = decodeResource(ROUTE_TYPE, r.bytes) as {
      virtual_hosts: {
        routes: {
          name: string;
          match: { safe_regex?: { regex: string } };
          route: { weighted_clusters: { clusters: { name: string; weight: { value: number } }[] } };
        }[];
      }[];
    };
    return rc.virtual_hosts[0]!.routes.map((x) => ({
      name: x.name,
      regex: x.match.safe_regex?.regex,
      weights: x.route.weighted_clusters.clusters.map((c) => c.weight.value),
    }));
  };

  let reload = f.nextReload();
  await f.write('routes.yaml', route(90, 10));
  let result = await reload;
  assert.equal(result.applied, true, JSON.stringify(result));
  const good = [
    { name: 'shop/greeter/rule-0/match-0', regex: '/helloworld\\.Greeter/[^/]+', weights: [90, 10] },
  ];
  assert.deepEqual(served(), good);

  reload = f.nextReload();
  await f.write(
    'routes.yaml',
    route(0, 100, 'greeter-v9').replace('service: helloworld.Greeter', 'service: hello world'),
  );
  result = await reload;
  assert.equal(result.applied, false);
  assert.deepEqual(result.applied ? [] : result.errors.map(formatConfigError), [
    "routes.yaml:7: spec.rules[0].matches[0].method.service: invalid value 'hello world': a protobuf service name, e.g. shop.v1.Reviews",
    'routes.yaml:10: spec.rules[0].backendRefs[1].name: Service shop/greeter-v9 does not exist',
  ]);
  assert.deepEqual(served(), good);

  reload = f.nextReload();
  await f.write('routes.yaml', route(0, 100));
  result = await reload;
  assert.equal(result.applied, true);
  assert.deepEqual(served()?.[0]?.weights, [0, 100]);
});
