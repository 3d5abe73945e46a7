/**
 * Where scripts/k8s/build.sh put the Kubernetes test binaries. The versions live in one file,
 * scripts/k8s/versions.env, read here and by the script, so the cache key cannot drift.
 */
import { accessSync, constants, existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SockmeshError } from '../../lib/errors.js';

const ROOT = join(
  dirname(fileURLToPath(import.meta.url)),
  import.meta.url.endsWith('.ts') ? '../..' : '../../..',
);
export const VERSIONS_FILE = join(ROOT, 'scripts', 'k8s', 'versions.env');
const BUILD_HINT = 'bash scripts/k8s/build.sh';

export interface KubeVersions {
  k8s: string;
  staging: string;
  kine: string;
  helm: string;
  gatewayApi: string;
}

export interface KubeBinaries {
  /** The cache directory of this version set. */
  dir: string;
  versions: KubeVersions;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubectl: string;
  kine: string;
  helm: string;
  /** The Gateway API standard-channel CRD manifests (`config/crd/standard/*.yaml`). */
  gatewayCrds: string[];
}

/** Parses `KEY=value` lines (no expansion, `#` comments), the subset build.sh sources. */
export function parseVersionsEnv(text: string): KubeVersions {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = line.match(/^\s*([A-Z0-9_]+)=([^\s#]*)\s*(#.*)?$/);
    if (m) vars.set(m[1]!, m[2]!);
  }
  const need = (key: string): string => {
    const v = vars.get(key);
    if (!v) throw new SockmeshError('SOCKMESH_E_CONFIG', `${VERSIONS_FILE} has no ${key}=`);
    return v;
  };
  return {
    k8s: need('K8S_VERSION'),
    staging: need('K8S_STAGING_VERSION'),
    kine: need('KINE_VERSION'),
    helm: need('HELM_VERSION'),
    gatewayApi: need('GATEWAY_API_VERSION'),
  };
}

/** The cache directory build.sh uses (`--print-dir`): `${SOCKMESH_CACHE:-/var/cache/sockmesh}/k8s/<key>`. */
export function kubeCacheDir(versions = parseVersionsEnv(readFileSync(VERSIONS_FILE, 'utf8'))): string {
  const root = process.env.SOCKMESH_CACHE || '/var/cache/sockmesh';
  const key = `${versions.k8s}-kine${versions.kine}-helm${versions.helm}-gwapi${versions.gatewayApi}`;
  return join(root, 'k8s', key);
}

/** The built binaries; throws SOCKMESH_E_NOT_BUILT naming the first missing one and the build command. */
export function kubeBinaries(): KubeBinaries {
  const versions = parseVersionsEnv(readFileSync(VERSIONS_FILE, 'utf8'));
  const dir = kubeCacheDir(versions);
  const bin = (name: string): string => {
    const p = join(dir, 'bin', name);
    try {
      accessSync(p, constants.X_OK);
    } catch {
      throw new SockmeshError(
        'SOCKMESH_E_NOT_BUILT',
        `${name} (Kubernetes ${versions.k8s} test binaries) is not built: ${p} is missing; run \`${BUILD_HINT}\``,
        { hint: `run \`${BUILD_HINT}\` (builds from the Go module proxy into ${dir})` },
      );
    }
    return p;
  };
  const bins = {
    kubeApiserver: bin('kube-apiserver'),
    kubeControllerManager: bin('kube-controller-manager'),
    kubectl: bin('kubectl'),
    kine: bin('kine'),
    helm: bin('helm'),
  };
  const crdDir = join(dir, 'crds', 'gateway-api');
  const gatewayCrds = existsSync(crdDir)
    ? readdirSync(crdDir)
        .filter((n) => n.endsWith('.yaml'))
        .sort()
        .map((n) => join(crdDir, n))
    : [];
  if (gatewayCrds.length === 0) {
    throw new SockmeshError(
      'SOCKMESH_E_NOT_BUILT',
      `the Gateway API ${versions.gatewayApi} CRDs are missing from ${crdDir}; run \`${BUILD_HINT}\``,
      { hint: `run \`${BUILD_HINT}\`` },
    );
  }
  return { dir, versions, ...bins, gatewayCrds };
}
