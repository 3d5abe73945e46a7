/**
 * Where the API server is and how to prove who we are: a kubeconfig file
 * (current context; inline or file certificates, a bearer token) or, inside a
 * pod, the service account's token and CA. Exec and auth-provider plugins are
 * not supported.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { SockmeshError } from '../../../lib/errors.js';

export interface KubeConnection {
  /** `https://host:port`, no trailing slash. */
  server: string;
  /** PEM. */
  ca?: string;
  cert?: string;
  key?: string;
  /** A fixed bearer token, or a file re-read as it rotates (projected service account tokens). */
  token?: string;
  tokenFile?: string;
  insecureSkipTlsVerify?: boolean;
  /** What it came from, for messages (`kubeconfig /path (context x)`, `in-cluster`). */
  description: string;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export function inClusterAvailable(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.KUBERNETES_SERVICE_HOST !== undefined && env.KUBERNETES_SERVICE_HOST !== '';
}

/** The pod's own service account, as client-go's rest.InClusterConfig reads it. */
export function inClusterConnection(env: NodeJS.ProcessEnv = process.env, dir = SA_DIR): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host)
    throw new SockmeshError('SOCKMESH_E_CONFIG', 'KUBERNETES_SERVICE_HOST is not set: not running in a pod', {
      hint: 'pass --kubeconfig <file>',
    });
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca: readText(path.join(dir, 'ca.crt'), 'service account CA'),
    tokenFile: path.join(dir, 'token'),
    description: 'in-cluster service account',
  };
}

export function loadKubeconfig(file: string, contextName?: string): KubeConnection {
  const text = readText(file, 'kubeconfig');
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_CONFIG', `kubeconfig ${file} is not valid YAML`, { cause: err });
  }
  const cfg = (doc ?? {}) as KubeconfigDoc;
  const bad = (what: string) =>
    new SockmeshError('SOCKMESH_E_CONFIG', `kubeconfig ${file}: ${what}`, {
      hint: 'check it with kubectl --kubeconfig <file> config view',
    });
  const ctxName = contextName ?? cfg['current-context'];
  if (!ctxName) throw bad('no current-context');
  const ctx = cfg.contexts?.find((c) => c.name === ctxName)?.context;
  if (!ctx) throw bad(`context '${ctxName}' not found`);
  const cluster = cfg.clusters?.find((c) => c.name === ctx.cluster)?.cluster;
  if (!cluster?.server) throw bad(`cluster '${ctx.cluster}' of context '${ctxName}' has no server`);
  const user = cfg.users?.find((u) => u.name === ctx.user)?.user ?? {};
  if (user.exec || user['auth-provider'])
    throw bad(`user '${ctx.user}' uses an exec/auth-provider plugin, which sockmesh does not run`);
  const base = path.dirname(file);
  const pem = (data: string | undefined, ref: string | undefined, what: string): string | undefined => {
    if (data) return Buffer.from(data, 'base64').toString('utf8');
    if (ref) return readText(path.resolve(base, ref), what);
    return undefined;
  };
  return {
    server: cluster.server.replace(/\/+$/, ''),
    ca: pem(cluster['certificate-authority-data'], cluster['certificate-authority'], 'cluster CA'),
    cert: pem(user['client-certificate-data'], user['client-certificate'], 'client certificate'),
    key: pem(user['client-key-data'], user['client-key'], 'client key'),
    token: user.token,
    tokenFile: user.tokenFile ? path.resolve(base, user.tokenFile) : undefined,
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    description: `kubeconfig ${file} (context ${ctxName})`,
  };
}

interface KubeconfigDoc {
  'current-context'?: string;
  clusters?: {
    name: string;
    cluster?: {
      server?: string;
      'certificate-authority-data'?: string;
      'certificate-authority'?: string;
      'insecure-skip-tls-verify'?: boolean;
    };
  }[];
  users?: {
    name: string;
    user?: {
      'client-certificate-data'?: string;
      'client-certificate'?: string;
      'client-key-data'?: string;
      'client-key'?: string;
      token?: string;
      tokenFile?: string;
      exec?: unknown;
      'auth-provider'?: unknown;
    };
  }[];
  contexts?: { name: string; context?: { cluster: string; user: string } }[];
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `cannot read ${what} ${file}`, { cause: err });
  }
}
