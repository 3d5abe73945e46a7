/**
 * The image contract (docs/install.md) as far as it can be checked without Docker: the Dockerfile
 * ships every addon this repository builds, the BPF objects where the loader looks for them, and
 * the chart's default tag is the package's version.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { OBJ_DIR } from '../../../bpf-sockops/addon.js';
import { CHART, ROOT } from './helm.js';

function addonDirs(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.') || name === 'dist') continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) addonDirs(p, out);
    else if (name === 'binding.gyp') out.push(relative(ROOT, dir));
  }
  return out;
}

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');

describe('Dockerfile (image contract)', () => {
  it('copies the build of every N-API addon into the image, at the path the loaders use', () => {
    const dirs = addonDirs(ROOT).sort();
    assert.deepEqual(dirs, ['bpf-sockops/addon', 'certs/workload-api/peercred', 'mesh-agent/handoff/fdpass']);
    for (const d of dirs)
      assert.ok(dockerfile.includes(`cp -a ${d}/build /out/${d}/`), `${d}/build is not copied`);
  });

  it('copies the .proto files the certs module loads at run time (tsc does not copy them)', () => {
    assert.ok(dockerfile.includes('cp -a certs/workload-api/workload.proto /out/certs/workload-api/'));
    assert.ok(dockerfile.includes('cp -a certs/delegated-identity/proto /out/certs/delegated-identity/'));
  });

  it('copies the BPF objects where the loader looks, the compiled CLI and the production modules', () => {
    const obj = relative(ROOT, OBJ_DIR);
    assert.equal(obj, 'bpf-sockops/obj');
    assert.ok(dockerfile.includes(`cp -a ${obj} /out/bpf-sockops/`));
    assert.match(dockerfile, /cp -a package\.json bin dist node_modules \/out\//);
    assert.match(dockerfile, /npm prune --omit=dev/);
    assert.match(dockerfile, /ln -s \/opt\/sockmesh\/bin\/sockmesh\.js \/usr\/local\/bin\/sockmesh/);
    assert.match(dockerfile, /apt-get install -y --no-install-recommends libbpf1/);
  });

  it('runs Node >= 20.18 (the package engines) and the chart defaults to the package version', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      version: string;
      engines: { node: string };
    };
    const major = /ARG NODE_IMAGE=node:(\d+)-bookworm/.exec(dockerfile)?.[1];
    assert.ok(major, 'the Dockerfile names no node:<major>-bookworm base');
    // node:<major> is that line's newest release: enough when the engines range admits the major.
    assert.match(
      pkg.engines.node,
      new RegExp(`(>=|\\^)${major}\\.`),
      `engines ${pkg.engines.node} vs node:${major}`,
    );
    const chart = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as {
      appVersion: string;
      apiVersion: string;
    };
    assert.equal(chart.apiVersion, 'v2');
    assert.equal(chart.appVersion, pkg.version);
  });

  it('leaves out of the build context what the image builds itself', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const p of ['node_modules', 'dist', '**/build', 'bpf-sockops/obj', '.git'])
      assert.ok(ignore.includes(p), p);
  });
});
