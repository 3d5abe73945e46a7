import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  cgroup2Mount,
  kubeletPodCgroup,
  kubeletRootDir,
  PodCgroupLayout,
  parseCgroupDriver,
  QOS_CLASSES,
  type QosClass,
} from '../../../mesh-agent/agent/pod-cgroups.js';

const UID = '3f0c2b1e-7d4a-4c3b-9e2f-0a1b2c3d4e5f';
const UID_ = '3f0c2b1e_7d4a_4c3b_9e2f_0a1b2c3d4e5f';

const roots: string[] = [];
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/** A kubelet root with the given pod directories (relative paths) made. */
function tree(dirs: string[]): string {
  const root = mkdtempSync(join(tmpdir(), 'sockmesh-podcg-'));
  roots.push(root);
  for (const d of dirs) mkdirSync(join(root, d), { recursive: true });
  return root;
}

const SYSTEMD: Record<QosClass, string> = {
  Guaranteed: `kubepods.slice/kubepods-pod${UID_}.slice`,
  Burstable: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`,
  BestEffort: `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice`,
};
const CGROUPFS: Record<QosClass, string> = {
  Guaranteed: `kubepods/pod${UID}`,
  Burstable: `kubepods/burstable/pod${UID}`,
  BestEffort: `kubepods/besteffort/pod${UID}`,
};

describe('pod cgroups: the kubelet layout', () => {
  for (const qos of QOS_CLASSES) {
    it(`names a ${qos} pod's cgroup for both drivers`, () => {
      assert.equal(kubeletPodCgroup('systemd', qos, UID), SYSTEMD[qos]);
      assert.equal(kubeletPodCgroup('cgroupfs', qos, UID), CGROUPFS[qos]);
    });
  }

  it('refuses a UID that could escape the tree', () => {
    assert.throws(() => kubeletPodCgroup('systemd', 'Burstable', '../../etc'), /not a Kubernetes UID/);
  });

  for (const [driver, layout] of [
    ['systemd', SYSTEMD],
    ['cgroupfs', CGROUPFS],
  ] as const) {
    for (const qos of QOS_CLASSES) {
      it(`finds a ${qos} pod under the ${driver} driver by UID alone (auto-detected driver, QoS unknown)`, () => {
        // A container scope below the pod, and another pod beside it, as a real node has.
        const root = tree([
          join(layout[qos], 'cri-containerd-abc.scope'),
          layout.Burstable.replace(UID, 'aaaa').replace(UID_, 'aaaa'),
        ]);
        const l = new PodCgroupLayout({ kubeletRoot: root });
        assert.deepEqual(l.drivers(), [driver]);
        const m = l.resolve({ namespace: 'shop', name: 'reviews-1', uid: UID });
        assert.deepEqual(m, { found: true, dir: join(root, layout[qos]), layout: driver });
      });

      it(`tries the given QoS class (${qos}) first under ${driver}`, () => {
        const root = tree([layout[qos]]);
        const l = new PodCgroupLayout({ kubeletRoot: root, driver });
        const first = l.candidates({ namespace: 'a', name: 'b', uid: UID, qosClass: qos })[0];
        assert.equal(first?.dir, join(root, layout[qos]));
      });
    }
  }

  it('an explicit driver never looks at the other layout', () => {
    const root = tree([CGROUPFS.Burstable]);
    const l = new PodCgroupLayout({ kubeletRoot: root, driver: 'systemd' });
    const m = l.resolve({ namespace: 'a', name: 'b', uid: UID });
    assert.equal(m.found, false);
    if (!m.found) assert.ok(m.tried.every((t) => t.includes('kubepods.slice')));
  });

  it('falls back to the lab layout for pods without a UID (directory manifests)', () => {
    const root = tree(['pods/shop.frontend-1', 'kubepods.slice']);
    const l = new PodCgroupLayout({ kubeletRoot: root, labPodsDir: join(root, 'pods') });
    assert.deepEqual(l.resolve({ namespace: 'shop', name: 'frontend-1' }), {
      found: true,
      dir: join(root, 'pods', 'shop.frontend-1'),
      layout: 'lab',
    });
  });

  it('a pod whose cgroup is not there yet is not found, with every place tried', () => {
    const root = tree(['kubepods.slice']);
    const l = new PodCgroupLayout({ kubeletRoot: root, labPodsDir: join(root, 'pods') });
    const m = l.resolve({ namespace: 'shop', name: 'x', uid: UID });
    assert.equal(m.found, false);
    if (!m.found) assert.equal(m.tried.length, 4); // three QoS branches + the lab layout
  });

  it('is stateless: a pod made after the layout object is found on the next call', () => {
    const root = tree([]);
    const l = new PodCgroupLayout({ kubeletRoot: root });
    assert.equal(l.resolve({ namespace: 'a', name: 'b', uid: UID }).found, false);
    mkdirSync(join(root, SYSTEMD.BestEffort), { recursive: true });
    assert.equal(l.resolve({ namespace: 'a', name: 'b', uid: UID }).found, true);
  });
});

describe('pod cgroups: the kubelet root and flags', () => {
  it('reads the cgroup2 mount from /proc/mounts (hybrid layout)', () => {
    const dir = tree([]);
    const f = join(dir, 'mounts');
    writeFileSync(
      f,
      'tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n',
    );
    assert.equal(cgroup2Mount(f), '/sys/fs/cgroup/unified');
    writeFileSync(f, 'proc /proc proc rw 0 0\n');
    assert.throws(() => cgroup2Mount(f), /SOCKMESH_E_NO_CGROUP2|no cgroup v2/);
  });

  it('takes kubelet --cgroup-root values relative to the mount, and directories below it as they are', () => {
    const m = '/sys/fs/cgroup/unified';
    assert.equal(kubeletRootDir('/', m), m);
    assert.equal(kubeletRootDir('/sockmesh-ab/node1', m), `${m}/sockmesh-ab/node1`);
    assert.equal(kubeletRootDir(`${m}/sockmesh-ab/node1`, m), `${m}/sockmesh-ab/node1`);
  });

  it('parses --cgroup-driver', () => {
    assert.equal(parseCgroupDriver(undefined), 'auto');
    assert.equal(parseCgroupDriver('cgroupfs'), 'cgroupfs');
    assert.throws(() => parseCgroupDriver('docker'), /systemd, cgroupfs or auto/);
  });
});
