import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { hostView } from '../../../bpf-sockops/pins.js';
import {
  evaluatePreflight,
  findBpffsFor,
  findCgroup2,
  missingBpfCaps,
  type PreflightInput,
  parseCapEff,
  parseMounts,
} from '../../../bpf-sockops/preflight.js';

const HYBRID = `tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
bpf /sys/fs/bpf bpf rw,relatime,mode=700 0 0
none /mnt/with\\040space tmpfs rw 0 0
`;

const ok: PreflightInput = {
  uid: 0,
  btfPresent: true,
  mounts: parseMounts(HYBRID),
  cgroupPath: '/sys/fs/cgroup/unified/sockmesh-x/node1',
  bpffsDir: '/sys/fs/bpf/sockmesh-x/node1',
  objectsBuilt: true,
  addonBuilt: true,
  probe: {
    progTypes: { cgroup_sock_addr: true, sock_ops: true, sk_msg: true, cgroup_skb: true },
    mapTypes: { hash: true, percpu_array: true, lpm_trie: true, sockhash: true },
  },
};

const codes = (input: PreflightInput) => evaluatePreflight(input).map((e) => e.code);

describe('mount table', () => {
  test('finds cgroup2 in a hybrid layout', () => {
    assert.equal(findCgroup2(parseMounts(HYBRID)), '/sys/fs/cgroup/unified');
  });
  test('decodes octal escapes', () => {
    assert.ok(parseMounts(HYBRID).some((m) => m.target === '/mnt/with space'));
  });
  test('bpffs must contain the directory, not merely share a prefix', () => {
    const m = parseMounts(HYBRID);
    assert.equal(findBpffsFor(m, '/sys/fs/bpf/x/y'), '/sys/fs/bpf');
    assert.equal(findBpffsFor(m, '/sys/fs/bpf'), '/sys/fs/bpf');
    assert.equal(findBpffsFor(m, '/sys/fs/bpfother'), undefined);
  });
});

describe('preflight', () => {
  test('a ready machine has no findings', () => {
    assert.deepEqual(codes(ok), []);
  });
  test('not root', () => {
    const [e] = evaluatePreflight({ ...ok, uid: 1000 });
    assert.equal(e?.code, 'SOCKMESH_E_NOT_ROOT');
    assert.match(e?.hint ?? '', /sudo/);
  });
  test('root without the capabilities is told which ones, not that the kernel lacks features', () => {
    // Docker's default set for root in a container (CHOWN, DAC_OVERRIDE, ..., SETFCAP): none of the four.
    const capEff = 0xa80425fbn;
    const [e, ...rest] = evaluatePreflight({ ...ok, capEff, probe: undefined });
    assert.equal(e?.code, 'SOCKMESH_E_NO_CAPABILITY');
    assert.match(e?.message ?? '', /running without CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN/);
    assert.match(e?.hint ?? '', /agent\.capabilities/);
    assert.deepEqual(rest, []);
  });
  test('CAP_SYS_ADMIN alone, or BPF + PERFMON + NET_ADMIN, is enough (also for a non-root user)', () => {
    assert.deepEqual(missingBpfCaps(1n << 21n), []);
    const three = (1n << 39n) | (1n << 38n) | (1n << 12n);
    assert.deepEqual(missingBpfCaps(three), []);
    assert.deepEqual(missingBpfCaps(three & ~(1n << 38n)), ['PERFMON']);
    assert.deepEqual(codes({ ...ok, uid: 1000, capEff: three }), []);
    assert.deepEqual(codes({ ...ok, uid: 1000, capEff: 0n }), ['SOCKMESH_E_NOT_ROOT']);
  });
  test('CapEff is read from /proc/<pid>/status', () => {
    assert.equal(
      parseCapEff('Name:\tnode\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n'),
      0x1ffffffffffn,
    );
    assert.equal(parseCapEff('Name:\tnode\n'), undefined);
  });
  test('no BTF', () => assert.deepEqual(codes({ ...ok, btfPresent: false }), ['SOCKMESH_E_NO_BTF']));
  test('no cgroup2 mounted', () => {
    const mounts = parseMounts(HYBRID).filter((m) => m.fstype !== 'cgroup2');
    const [e] = evaluatePreflight({ ...ok, mounts });
    assert.equal(e?.code, 'SOCKMESH_E_NO_CGROUP2');
    assert.match(e?.hint ?? '', /mount -t cgroup2/);
  });
  test('cgroup outside the cgroup2 mount (a v1 controller path)', () => {
    assert.deepEqual(codes({ ...ok, cgroupPath: '/sys/fs/cgroup/cpu/x' }), ['SOCKMESH_E_NO_CGROUP2']);
  });
  test('bpffs not mounted', () => {
    const mounts = parseMounts(HYBRID).filter((m) => m.fstype !== 'bpf');
    const [e] = evaluatePreflight({ ...ok, mounts });
    assert.equal(e?.code, 'SOCKMESH_E_NO_BPFFS');
    assert.match(e?.hint ?? '', /mount -t bpf/);
  });
  test('objects or addon not built', () => {
    assert.deepEqual(codes({ ...ok, objectsBuilt: false, addonBuilt: false }), [
      'SOCKMESH_E_NOT_BUILT',
      'SOCKMESH_E_NOT_BUILT',
    ]);
    const [e] = evaluatePreflight({ ...ok, objectsBuilt: false });
    assert.match(e?.hint ?? '', /npm run build:bpf/);
  });
  test('kernel without sockhash or sk_msg names what is missing', () => {
    const [e] = evaluatePreflight({
      ...ok,
      probe: {
        progTypes: { cgroup_sock_addr: true, sock_ops: true, sk_msg: false, cgroup_skb: true },
        mapTypes: { hash: true, percpu_array: true, lpm_trie: true, sockhash: false },
      },
    });
    assert.equal(e?.code, 'SOCKMESH_E_KERNEL_FEATURE');
    assert.match(e?.message ?? '', /program type sk_msg, map type sockhash/);
  });
  test('a kernel without the TCP health callbacks is named with the version it needs', () => {
    const [e, ...rest] = evaluatePreflight({ ...ok, kernelRelease: '5.4.0-150-generic' });
    assert.equal(e?.code, 'SOCKMESH_E_KERNEL_FEATURE');
    assert.match(e?.message ?? '', /kernel 5\.4\.0-150-generic lacks the sockops callbacks TCP health needs/);
    assert.match(e?.hint ?? '', /Linux >= 5\.10/);
    assert.equal(rest.length, 0);
    for (const fine of ['5.10.0', '6.1.0-28-amd64', '6.18.44-fc-v1300', 'unparseable'])
      assert.deepEqual(codes({ ...ok, kernelRelease: fine }), [], fine);
  });
  test('findings come most fundamental first', () => {
    assert.deepEqual(codes({ ...ok, uid: 1, btfPresent: false, addonBuilt: false }), [
      'SOCKMESH_E_NOT_ROOT',
      'SOCKMESH_E_NO_BTF',
      'SOCKMESH_E_NOT_BUILT',
    ]);
  });
});

describe('hostView (paths hidden by ip netns exec)', () => {
  const outer = () => ({ root: '/proc/42/root', mountsFile: '/proc/42/mounts' });
  test('a visible path is used as is', () => {
    const seen = new Set(['/sys/fs/bpf/x']);
    assert.deepEqual(
      hostView('/sys/fs/bpf/x', (p) => seen.has(p), outer),
      {
        path: '/sys/fs/bpf/x',
        mountsFile: '/proc/self/mounts',
      },
    );
  });
  test('a hidden path is reached through the outer mount namespace', () => {
    const seen = new Set(['/proc/42/root/sys/fs/bpf/x']);
    assert.deepEqual(
      hostView('/sys/fs/bpf/x', (p) => seen.has(p), outer),
      {
        path: '/proc/42/root/sys/fs/bpf/x',
        mountsFile: '/proc/42/mounts',
      },
    );
  });
  test('a path to be created goes where its parent is', () => {
    const seen = new Set(['/proc/42/root/sys/fs/bpf/x']);
    assert.equal(
      hostView('/sys/fs/bpf/x/node1', (p) => seen.has(p), outer).path,
      '/proc/42/root/sys/fs/bpf/x/node1',
    );
  });
  test('without an outer namespace the path stays local', () => {
    assert.equal(
      hostView(
        '/sys/fs/bpf/x',
        () => false,
        () => undefined,
      ).path,
      '/sys/fs/bpf/x',
    );
  });
});
