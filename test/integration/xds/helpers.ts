// Shared fixtures for the xDS integration tests: a temp manifests dir and a running control plane.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import { nullLogger } from '../../../lib/log.js';
import { jsonToStruct, normalizeDecoded } from '../../../xds/codec.js';
import { adsClientConstructor, type ProtoObject } from '../../../xds/protos.js';
import { ControlPlane, type ReloadResult } from '../../../xds/server/control-plane.js';
import { DirectorySource } from '../../../xds/sources/directory.js';

export const MESH = `
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { sockmesh.io/mesh: enabled } }
---
apiVersion: sockmesh.io/v1alpha1
kind: Node
metadata: { name: node1 }
spec: { address: 10.99.0.1 }
---
apiVersion: sockmesh.io/v1alpha1
kind: Node
metadata: { name: node2 }
spec: { address: 10.99.0.2 }
---
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: shop }
spec:
  clusterIP: 10.96.0.10
  selector: { app: reviews }
  ports: [{ name: http, port: 9080, appProtocol: http }]
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-1, namespace: shop, labels: { app: reviews } }
spec: { nodeName: node1 }
status: { podIP: 10.1.1.10 }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-2, namespace: shop, labels: { app: reviews } }
spec: { nodeName: node2 }
status: { podIP: 10.1.2.10 }
`;

export interface Fixture {
  dir: string;
  cp: ControlPlane;
  /** `unix:/...` */
  unix: string;
  /** `127.0.0.1:port` */
  tcp: string;
  write(file: string, text: string): Promise<void>;
  nextReload(): Promise<ReloadResult>;
}

export async function startControlPlane(
  t: TestContext,
  files: Record<string, string> = { 'mesh.yaml': MESH },
): Promise<Fixture> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sockmesh-xds-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const manifests = path.join(dir, 'manifests');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(manifests);
  for (const [f, text] of Object.entries(files)) await writeFile(path.join(manifests, f), text);
  const cp = new ControlPlane({
    source: new DirectorySource(manifests),
    listen: [{ address: `unix:${path.join(dir, 'xds.sock')}` }, { address: '127.0.0.1:0' }],
    logger: nullLogger,
    debounceMs: 10,
  });
  t.after(() => cp.close());
  await cp.start();
  const [unix, tcp] = cp.addresses() as [string, string];
  return {
    dir: manifests,
    cp,
    unix,
    tcp,
    write: (file, text) => writeFile(path.join(manifests, file), text),
    nextReload: () => new Promise((resolve) => cp.once('reload', resolve)),
  };
}

export interface RawResponse {
  version_info: string;
  nonce: string;
  type_url: string;
  resources: ProtoObject[];
}

/** The waiting time ran out with the stream still open. */
export class NoResponse extends Error {}

/** Tells waiters when a gRPC stream ended or failed; it never resolves later. */
export class StreamEnd {
  private reason: Error | undefined;
  private readonly listeners = new Set<(err: Error) => void>();

  watch(stream: ClientDuplexStream<object, unknown>): void {
    const end = (why: string) => {
      if (this.reason) return;
      this.reason = new Error(`the xDS stream died: ${why}`);
      for (const l of [...this.listeners]) l(this.reason);
      this.listeners.clear();
    };
    stream.on('error', (err: Error) => end(err.message));
    stream.on('status', (s: { code: number; details: string }) => end(`status ${s.code} ${s.details}`));
    stream.on('end', () => end('the server ended it'));
    stream.on('close', () => end('closed'));
  }

  throwIfEnded(): void {
    if (this.reason) throw this.reason;
  }

  onEnd(listener: (err: Error) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** true when `next` timed out on a live stream; false when something arrived; rejects when the stream died. */
export async function quietOn(next: Promise<unknown>, ended: StreamEnd): Promise<boolean> {
  try {
    await next;
    return false;
  } catch (err) {
    if (!(err instanceof NoResponse)) throw err;
    ended.throwIfEnded();
    return true;
  }
}

/** A bare ADS stream, to test protocol rules without the AdsClient's logic. */
export class RawAds {
  private readonly client;
  readonly stream: ClientDuplexStream<object, RawResponse>;
  private readonly queue: RawResponse[] = [];
  private waiters: ((r: RawResponse) => void)[] = [];
  private readonly ended = new StreamEnd();

  constructor(target: string) {
    const Ctor = adsClientConstructor();
    this.client = new Ctor(target, credentials.createInsecure());
    this.stream = (
      this.client as unknown as { StreamAggregatedResources(): ClientDuplexStream<object, RawResponse> }
    ).StreamAggregatedResources();
    this.stream.on('data', (raw: RawResponse) => {
      const r = { ...raw, resources: raw.resources.map(normalizeDecoded) };
      const w = this.waiters.shift();
      if (w) w(r);
      else this.queue.push(r);
    });
    this.ended.watch(this.stream);
  }

  send(req: {
    node?: string;
    type: string;
    names?: string[];
    version?: string;
    nonce?: string;
    error?: string;
    metadata?: Record<string, unknown>;
  }): void {
    this.stream.write({
      node: req.node ? { id: req.node, metadata: jsonToStruct(req.metadata ?? {}) } : undefined,
      type_url: req.type,
      resource_names: req.names ?? [],
      version_info: req.version ?? '',
      response_nonce: req.nonce ?? '',
      error_detail: req.error ? { code: 3, message: req.error } : undefined,
    });
  }

  next(timeoutMs = 3000): Promise<RawResponse> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    this.ended.throwIfEnded();
    return new Promise((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        stopWaiting();
        this.waiters = this.waiters.filter((w) => w !== done);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new NoResponse(`no DiscoveryResponse within ${timeoutMs} ms`));
      }, timeoutMs);
      const stopWaiting = this.ended.onEnd((err) => {
        finish();
        reject(err);
      });
      const done = (r: RawResponse) => {
        finish();
        resolve(r);
      };
      this.waiters.push(done);
    });
  }

  /**
   * Resolves true if nothing arrives within `ms` while the stream stays open.
   * A stream that ended or failed (before or during the wait) rejects: a dead
   * stream is silent too, and must not pass for a server that chose not to answer.
   */
  quiet(ms: number): Promise<boolean> {
    return quietOn(this.next(ms), this.ended);
  }

  close(): void {
    this.stream.cancel();
    this.client.close();
  }
}

/** A request to the admin endpoint on its unix socket (GET without a body, POST with one); the answer parsed. */
export function adminCall(
  socket: string,
  urlPath: string,
  body?: string | Buffer,
): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: socket, path: urlPath, method: body === undefined ? 'GET' : 'POST' },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
