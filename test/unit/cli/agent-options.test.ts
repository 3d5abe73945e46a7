import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { agentOptions, ReadyFile, servesItself } from '../../../cli/commands/agent.js';
import { SockmeshError } from '../../../lib/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'sockmesh-agent-opts-'));
after(() => rmSync(dir, { recursive: true, force: true }));
for (const f of ['tls.crt', 'tls.key', 'ca.crt']) writeFileSync(join(dir, f), `pem of ${f}\n`);

const BASE = [
  '--node=node-a',
  '--control-plane=sockmesh-control-plane.sockmesh-system.svc:15010',
  '--proxy-ip=10.0.0.5',
  '--tunnel-ip=10.0.0.5',
  '--cgroup=/sys/fs/cgroup',
  '--bpffs=/sys/fs/bpf/sockmesh',
  '--ca-dir=/var/lib/sockmesh/ca',
];
const TLS = [
  `--control-plane-tls-cert=${join(dir, 'tls.crt')}`,
  `--control-plane-tls-key=${join(dir, 'tls.key')}`,
  `--control-plane-tls-ca=${join(dir, 'ca.crt')}`,
];

function code(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SockmeshError, String(err));
    return { code: err.code, message: err.message };
  }
  assert.fail('expected an error');
}

describe('agentOptions: mTLS to the control plane', () => {
  it('reads the three PEM files into controlPlaneTls', () => {
    const o = agentOptions([...BASE, ...TLS]).agent;
    assert.equal(o.controlPlane, 'sockmesh-control-plane.sockmesh-system.svc:15010');
    assert.equal(o.controlPlaneTls?.cert.toString(), 'pem of tls.crt\n');
    assert.equal(o.controlPlaneTls?.key.toString(), 'pem of tls.key\n');
    assert.equal(o.controlPlaneTls?.ca.toString(), 'pem of ca.crt\n');
  });

  it('leaves the channel plaintext without the flags (unix socket on the node)', () => {
    assert.equal(agentOptions(BASE).agent.controlPlaneTls, undefined);
  });

  it('refuses a partial set, naming the three flags', () => {
    const e = code(() => agentOptions([...BASE, TLS[0]!]));
    assert.equal(e.code, 'SOCKMESH_E_USAGE');
    assert.match(
      e.message,
      /--control-plane-tls-cert, --control-plane-tls-key, --control-plane-tls-ca go together/,
    );
  });

  it('names the flag and the path of a file it cannot read', () => {
    const e = code(() =>
      agentOptions([...BASE, ...TLS.slice(0, 2), '--control-plane-tls-ca=/nonexistent/ca.crt']),
    );
    assert.equal(e.code, 'SOCKMESH_E_NOT_FOUND');
    assert.match(e.message, /--control-plane-tls-ca \/nonexistent\/ca\.crt/);
  });

  it('keeps the other checks: a non-IPv4 proxy address is refused', () => {
    const e = code(() =>
      agentOptions([...BASE.filter((a) => !a.startsWith('--proxy-ip')), '--proxy-ip=node-a']),
    );
    assert.equal(e.code, 'SOCKMESH_E_USAGE');
    assert.match(e.message, /--proxy-ip must be an IPv4 address, got 'node-a'/);
  });
});

describe('servesItself: readiness of this process, not of the socket holder', () => {
  const versions = { listeners: '3', routes: '3', clusters: '3', endpoints: '3' };
  it('is ready with a complete config and the listeners its own', () => {
    assert.equal(servesItself({ xds: { versions }, handoff: { state: 'serving' } }), true);
  });
  it('is not ready while it waits for the old agent to hand over', () => {
    assert.equal(servesItself({ xds: { versions }, handoff: { state: 'starting' } }), false);
  });
  it('is not ready once it handed over and drains', () => {
    assert.equal(servesItself({ xds: { versions }, handoff: { state: 'draining' } }), false);
  });
  it('is not ready before the whole config arrived', () => {
    assert.equal(
      servesItself({
        xds: { versions: { ...versions, endpoints: undefined } },
        handoff: { state: 'serving' },
      }),
      false,
    );
    assert.equal(servesItself({ xds: { versions: {} }, handoff: null }), false);
  });
  it('takes --ready-file', () => {
    assert.equal(agentOptions([...BASE, '--ready-file=/tmp/ready']).readyFile, '/tmp/ready');
    assert.equal(agentOptions(BASE).readyFile, undefined);
  });
});

describe('ReadyFile', () => {
  it('removes a file left by an earlier container, then follows the readiness', () => {
    const path = join(dir, 'ready');
    writeFileSync(path, '1\n');
    const ready = new ReadyFile(path);
    assert.equal(existsSync(path), false);
    ready.set(true);
    assert.equal(readFileSync(path, 'utf8'), `${process.pid}\n`);
    ready.set(true);
    ready.set(false);
    assert.equal(existsSync(path), false);
    ready.set(false);
    assert.equal(existsSync(path), false);
  });
});

describe('agentOptions: where the SVIDs come from', () => {
  const NO_CA = BASE.filter((a) => !a.startsWith('--ca-dir'));

  it("takes SPIRE's admin socket for the Delegated Identity API, and no CA directory", () => {
    const o = agentOptions([...NO_CA, '--spire-admin-socket=/run/spire/admin/admin.sock']).agent;
    assert.equal(o.spireAdminSocket, '/run/spire/admin/admin.sock');
    assert.equal(o.caDir, undefined);
    assert.equal(o.workloadApi, undefined);
  });

  it('refuses two sources at once, naming both flags', () => {
    const e = code(() => agentOptions([...BASE, '--spire-admin-socket=/run/spire/admin.sock']));
    assert.equal(e.code, 'SOCKMESH_E_USAGE');
    assert.match(e.message, /--ca-dir and --spire-admin-socket exclude each other/);
    const w = code(() =>
      agentOptions([...NO_CA, '--workload-api=/run/spire/agent.sock', '--spire-admin-socket=/run/a.sock']),
    );
    assert.match(w.message, /--workload-api and --spire-admin-socket exclude each other/);
  });

  it('needs one of the three', () => {
    const saved = process.env.SPIFFE_ENDPOINT_SOCKET;
    delete process.env.SPIFFE_ENDPOINT_SOCKET;
    try {
      const e = code(() => agentOptions(NO_CA));
      assert.match(e.message, /--ca-dir, --workload-api or --spire-admin-socket is required/);
    } finally {
      if (saved !== undefined) process.env.SPIFFE_ENDPOINT_SOCKET = saved;
    }
  });
});

describe('agentOptions: kernel TCP health', () => {
  it('is on by default and off with --no-tcp-health', () => {
    assert.equal(agentOptions(BASE).agent.tcpHealth, true);
    assert.equal(agentOptions([...BASE, '--no-tcp-health']).agent.tcpHealth, false);
  });
});
