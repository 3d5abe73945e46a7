// DirectorySource against the real filesystem: nested directories, atomic replace
// (rename, as editors and apply write), deletion, and the parse cache staying correct.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { DirectorySource } from '../../../xds/sources/directory.js';

const ns = (name: string) => `apiVersion: v1\nkind: Namespace\nmetadata: { name: ${name} }\n`;
const names = (s: Awaited<ReturnType<DirectorySource['load']>>) =>
  s.objects.map((o) => (o.value as { metadata: { name: string } }).metadata.name);

test('loads nested files in path order and reports parse errors with file and line', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sockmesh-dirsrc-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'b'));
  await writeFile(path.join(dir, 'a.yaml'), `${ns('one')}---\n${ns('two')}`);
  await writeFile(path.join(dir, 'b', 'c.yml'), ns('three'));
  await writeFile(path.join(dir, 'notes.txt'), 'ignored');
  await writeFile(path.join(dir, '.hidden.yaml'), ns('hidden'));
  const src = new DirectorySource(dir);
  t.after(() => src.close());
  const s = await src.load();
  assert.deepEqual(names(s), ['one', 'two', 'three']);
  assert.deepEqual(s.objects[2]?.origin, { file: path.join('b', 'c.yml'), line: 1 });
  await writeFile(path.join(dir, 'b', 'c.yml'), 'kind: [unclosed\n');
  const bad = await src.load();
  assert.equal(bad.errors.length > 0, true);
  assert.equal(bad.errors[0]?.file, path.join('b', 'c.yml'));
});

test('watch reports edits made by rename (twice), in new subdirectories, and deletions', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sockmesh-dirsrc-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'a.yaml'), ns('one'));
  const src = new DirectorySource(dir);
  t.after(() => src.close());
  let events = 0;
  let wake: (() => void) | undefined;
  src.watch(() => {
    events++;
    wake?.();
  });
  const changed = async (what: () => Promise<void>) => {
    const before = events;
    const woke = new Promise<void>((resolve) => {
      wake = resolve;
    });
    await what();
    await Promise.race([woke, new Promise((r) => setTimeout(r, 3000))]);
    assert.ok(events > before, 'no change event');
  };
  for (const n of ['two', 'three']) {
    await changed(async () => {
      await writeFile(path.join(dir, 'a.yaml.tmp'), ns(n));
      await rename(path.join(dir, 'a.yaml.tmp'), path.join(dir, 'a.yaml'));
    });
    assert.deepEqual(names(await src.load()), [n]);
  }
  await changed(() => mkdir(path.join(dir, 'sub')));
  await new Promise((r) => setTimeout(r, 50)); // the new directory's watcher is set up on that event
  await changed(() => writeFile(path.join(dir, 'sub', 'x.yaml'), ns('four')));
  assert.deepEqual(names(await src.load()), ['three', 'four']);
  await changed(() => rm(path.join(dir, 'a.yaml')));
  assert.deepEqual(names(await src.load()), ['four']);
});
