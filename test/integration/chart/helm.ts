/**
 * The real helm binary (helm.sh/helm/v4, built by scripts/k8s/build.sh) run against charts/sockmesh,
 * with its own cache/config/data directories so a test never reads or writes the user's.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');
export const CHART = join(ROOT, 'charts', 'sockmesh');

/** The non-default values both render and API server tests use. */
export const NON_DEFAULT = [
  'identity.mode=spire',
  'identity.spire.socketDir=/run/spire/sockets',
  'identity.spire.socketName=agent.sock',
  'agent.accelerate=true',
  'agent.workers=2',
  'agent.drainTimeoutSeconds=90',
  'agent.cgroupDriver=systemd',
  'agent.kubeletCgroupRoot=/custom',
  'crds.install=false',
  'logLevel=debug',
  'trustDomain=prod.example.org',
];

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A Kubernetes object as rendered; fields are read through narrow helpers in the tests. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    annotations?: Record<string, string>;
    labels?: Record<string, string>;
  };
  [field: string]: unknown;
}

export class Helm {
  private readonly home = mkdtempSync(join(tmpdir(), 'sockmesh-helm-'));

  constructor(
    private readonly bin: string,
    private readonly kubeconfig?: string,
  ) {}

  run(args: string[]): Promise<RunResult> {
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: this.home,
      HELM_CACHE_HOME: join(this.home, 'cache'),
      HELM_CONFIG_HOME: join(this.home, 'config'),
      HELM_DATA_HOME: join(this.home, 'data'),
      ...(this.kubeconfig ? { KUBECONFIG: this.kubeconfig } : {}),
    };
    return new Promise((resolve, reject) => {
      execFile(this.bin, args, { env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(err);
          return;
        }
        resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
      });
    });
  }

  /** `helm template` of the chart; throws with helm's stderr when it fails. */
  async template(
    release: string,
    namespace: string,
    set: string[] = [],
    chart = CHART,
  ): Promise<KubeObject[]> {
    const r = await this.run([
      'template',
      release,
      chart,
      '-n',
      namespace,
      ...set.flatMap((s) => ['--set', s]),
    ]);
    if (r.code !== 0) throw new Error(`helm template failed (${r.code}): ${r.stderr}`);
    return parseObjects(r.stdout);
  }

  cleanup(): void {
    rmSync(this.home, { recursive: true, force: true });
  }
}

export function parseObjects(text: string): KubeObject[] {
  const out: KubeObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length) throw new Error(`rendered YAML does not parse: ${doc.errors[0]!.message}`);
    const v = doc.toJS() as KubeObject | null;
    if (v) out.push(v);
  }
  return out;
}

export function find(objects: KubeObject[], kind: string, nameSuffix = ''): KubeObject {
  const o = objects.find((x) => x.kind === kind && x.metadata.name.endsWith(nameSuffix));
  if (!o)
    throw new Error(
      `no ${kind} *${nameSuffix} in ${objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`,
    );
  return o;
}

/** A path into an object, for assertions on rendered fields. */
export function at(o: unknown, ...path: (string | number)[]): unknown {
  let cur: unknown = o;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[p];
  }
  return cur;
}

export function toYamlStream(objects: KubeObject[]): string {
  return objects.map((o) => `---\n${JSON.stringify(o)}\n`).join('');
}
