/**
 * The embedded default source: every *.yaml / *.yml file under a directory
 * (recursively, in path order), watched for changes.
 */
import { type FSWatcher, watch } from 'node:fs';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { SockmeshError } from '../../lib/errors.js';
import type { ConfigError, ConfigSource, SourceObject, SourceState } from './source.js';
import { type ParsedFile, parseManifestText } from './yaml.js';

const MANIFEST_EXT = /\.ya?ml$/i;

export class DirectorySource implements ConfigSource {
  readonly description: string;
  private watchers: Map<string, FSWatcher> | undefined;
  /** Parsed files by path, reused while a file's text is unchanged (YAML parsing dominates reload time). */
  private parsed = new Map<string, ParsedFile & { text: string }>();

  constructor(readonly dir: string) {
    this.description = `dir:${dir}`;
  }

  async load(): Promise<SourceState> {
    let files: string[];
    try {
      files = await listManifests(this.dir);
    } catch (err) {
      throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `cannot read manifests directory ${this.dir}`, {
        hint: 'pass an existing directory with --manifests',
        cause: err,
      });
    }
    const objects: SourceObject[] = [];
    const errors: ConfigError[] = [];
    const seen = new Map<string, ParsedFile & { text: string }>();
    for (const file of files) {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        // Deleted between readdir and read: the next watch event reloads.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      let parsed = this.parsed.get(file);
      if (parsed?.text !== text) {
        parsed = { text, ...parseManifestText(path.relative(this.dir, file) || file, text) };
      }
      seen.set(file, parsed);
      objects.push(...parsed.objects);
      errors.push(...parsed.errors);
    }
    this.parsed = seen;
    return { objects, errors };
  }

  /**
   * One non-recursive watcher per directory: Node 20's recursive watch on Linux
   * stops reporting a file once it was replaced by rename, which is how editors
   * and `apply` write. New subdirectories are picked up on the next event.
   */
  watch(onChange: () => void): void {
    if (this.watchers) throw new SockmeshError('SOCKMESH_E_XDS', 'DirectorySource.watch called twice');
    const watchers = new Map<string, FSWatcher>();
    this.watchers = watchers;
    const fire = () => {
      void this.watchTree(watchers, fire);
      onChange();
    };
    void this.watchTree(watchers, fire);
  }

  private async watchTree(watchers: Map<string, FSWatcher>, fire: () => void): Promise<void> {
    const dirs = await listDirectories(this.dir).catch(() => [this.dir]);
    for (const d of dirs) {
      if (watchers.has(d) || this.watchers !== watchers) continue;
      try {
        const w = watch(d, { persistent: false }, fire);
        w.on('error', () => {
          w.close();
          watchers.delete(d);
          fire();
        });
        watchers.set(d, w);
      } catch {
        // vanished between listing and watching: the parent's watcher reports it
      }
    }
  }

  /** Writes (atomically) one manifest file below the directory; used by `apply`. */
  async writeManifest(relativePath: string, text: string): Promise<string> {
    const target = path.resolve(this.dir, relativePath);
    if (!target.startsWith(path.resolve(this.dir) + path.sep)) {
      throw new SockmeshError('SOCKMESH_E_USAGE', `refusing to write outside ${this.dir}: ${relativePath}`);
    }
    await mkdir(path.dirname(target), { recursive: true });
    const tmp = `${target}.${process.pid}.tmp`;
    await writeFile(tmp, text);
    await rename(tmp, target);
    return target;
  }

  /**
   * Replaces documents in one existing manifest file, keeping the others (and
   * their comments) as they are. `replace(doc)` returns new YAML text for a
   * document, or undefined to keep it.
   */
  async rewriteDocuments(
    relativePath: string,
    replace: (value: unknown) => string | undefined,
  ): Promise<void> {
    const file = path.resolve(this.dir, relativePath);
    const text = await readFile(file, 'utf8');
    const docs = parseAllDocuments(text);
    const list = Array.isArray(docs) ? docs : [];
    const parts = list.map((d) => {
      const next = replace(d.toJS());
      return next ?? d.toString().replace(/^---\n/, '');
    });
    await this.writeManifest(relativePath, parts.join('---\n'));
  }

  async close(): Promise<void> {
    for (const w of this.watchers?.values() ?? []) w.close();
    this.watchers = undefined;
  }
}

async function listManifests(dir: string): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listManifests(p)));
    else if (e.isFile() && MANIFEST_EXT.test(e.name)) out.push(p);
  }
  return out;
}

/** The directory and every (non-hidden) directory below it. */
async function listDirectories(dir: string): Promise<string[]> {
  const out = [dir];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory() && !e.name.startsWith('.'))
      out.push(...(await listDirectories(path.join(dir, e.name))));
  }
  return out;
}
