/**
 * The mesh both proxyless-gRPC interop tests resolve against (grpc-js-xds and grpc-go's xDS
 * client): two real gRPC backends (grpc-js) that say who answered, and the manifests of a
 * reviews Service split between them by an HTTPRoute with a header match.
 */
import type { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

export const ECHO_PATH = '/echo.Echo/Who';

/** The backends' codec: JSON both ways. */
export const echoJson = {
  serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as { backend: string },
};

/** A gRPC server on host:0 answering Who with its name; stopped after the test. */
export async function grpcBackend(t: test.TestContext, name: string, host: string): Promise<number> {
  const server = new grpc.Server();
  server.addService(
    {
      Who: {
        path: ECHO_PATH,
        requestStream: false,
        responseStream: false,
        requestSerialize: echoJson.serialize,
        requestDeserialize: echoJson.deserialize,
        responseSerialize: echoJson.serialize,
        responseDeserialize: echoJson.deserialize,
      },
    },
    { Who: (_call: unknown, cb: grpc.sendUnaryData<{ backend: string }>) => cb(null, { backend: name }) },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  t.after(() => server.forceShutdown());
  return port;
}

/** The mesh: pods at the given IPs, backends on ports p1/p2, route weights w1/w2. */
export function grpcMeshManifests(
  p1: number,
  p2: number,
  w1: number,
  w2: number,
  podIps: [string, string] = ['127.0.0.2', '127.0.0.3'],
): string {
  const svc = (name: string, selector: string, target: number | undefined) => `
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: shop }
spec:
  clusterIP: 10.96.${name.length}.${name.charCodeAt(name.length - 1)}
  selector: { ${selector} }
  ports: [{ name: grpc, port: 9080, appProtocol: grpc${target ? `, targetPort: ${target}` : ''} }]
---`;
  return `
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { sockmesh.io/mesh: enabled } }
---
${svc('reviews', 'app: reviews', undefined)}
${svc('reviews-v1', 'app: reviews, version: v1', p1)}
${svc('reviews-v2', 'app: reviews, version: v2', p2)}
apiVersion: v1
kind: Pod
metadata: { name: reviews-v1, namespace: shop, labels: { app: reviews, version: v1 } }
spec: { nodeName: node1 }
status: { podIP: ${podIps[0]} }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v2, namespace: shop, labels: { app: reviews, version: v2 } }
spec: { nodeName: node1 }
status: { podIP: ${podIps[1]} }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: reviews, port: 9080 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /echo.Echo }, headers: [{ name: x-canary, value: "yes" }] }]
      backendRefs: [{ name: reviews-v2, port: 9080 }]
    - matches: [{ path: { type: PathPrefix, value: /echo.Echo } }]
      backendRefs:
        - { name: reviews-v1, port: 9080, weight: ${w1} }
        - { name: reviews-v2, port: 9080, weight: ${w2} }
`;
}
