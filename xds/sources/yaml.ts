/**
 * Kubernetes-style YAML (several documents per file) into SourceObjects that
 * can tell the line of every field, so validation can say file:line. Only the
 * plain values and the file text are kept: the syntax trees (several times
 * bigger) are rebuilt on demand when an error has to be located.
 */
import { type Document, isCollection, isNode, LineCounter, parseAllDocuments, visit } from 'yaml';
import type { ConfigError, FieldPath, SourceLocation, SourceObject } from './source.js';

export interface ParsedFile {
  objects: SourceObject[];
  errors: ConfigError[];
}

export function parseManifestText(file: string, text: string): ParsedFile {
  const lineCounter = new LineCounter();
  // logLevel error: what a manifest says is reported as its errors, never as process warnings on stderr.
  const docs = parseAllDocuments(text, {
    lineCounter,
    prettyErrors: false,
    uniqueKeys: true,
    logLevel: 'error',
  });
  const objects: SourceObject[] = [];
  const errors: ConfigError[] = [];
  const lineAt = (offset: number): number => lineCounter.linePos(offset).line;
  const list = Array.isArray(docs) ? docs : [];
  if (!Array.isArray(docs)) {
    errors.push({ file, line: 1, path: '', reason: 'not a YAML stream' });
  }
  let trees: typeof list | undefined;
  const tree = (index: number) => {
    trees ??= parseAllDocuments(text, { uniqueKeys: true, logLevel: 'error' }) as typeof list;
    return trees[index]!;
  };
  for (const [index, doc] of list.entries()) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        errors.push({
          file,
          line: lineAt(e.pos[0]),
          path: '',
          reason: `YAML syntax: ${firstLine(e.message)}`,
        });
      }
      continue;
    }
    if (doc.contents === null) continue; // an empty document (e.g. a trailing ---)
    const contents = doc.contents;
    const origin: SourceLocation = {
      file,
      line: isNode(contents) && contents.range ? lineAt(contents.range[0]) : 1,
    };
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      const aliasAt = unresolvedAliasOffset(doc);
      // An alias without its anchor, or an alias bomb: the document is refused, the reader goes on.
      errors.push({
        file,
        line: aliasAt === undefined ? origin.line : lineAt(aliasAt),
        path: '',
        reason: `YAML syntax: ${firstLine((err as Error).message)}`,
      });
      continue;
    }
    if (value === null || value === undefined) continue;
    objects.push({
      value,
      origin,
      locate(path: FieldPath): SourceLocation {
        const doc = tree(index);
        for (let n = path.length; n > 0; n--) {
          const node: unknown = doc.getIn(path.slice(0, n), true);
          if (isNode(node) && node.range) {
            // A block collection starts on the line after its key; point at the key instead.
            const offset =
              isCollection(node) && n > 0
                ? keyOffset(doc.getIn(path.slice(0, n - 1), true), path[n - 1])
                : undefined;
            return { file, line: lineAt(offset ?? node.range[0]) };
          }
        }
        return origin;
      },
    });
  }
  return { objects, errors };
}

function keyOffset(parent: unknown, key: string | number | undefined): number | undefined {
  if (!isCollection(parent) || key === undefined) return undefined;
  if (typeof key === 'number') return undefined;
  for (const item of parent.items) {
    const pair = item as { key?: unknown };
    if (isNode(pair.key) && (pair.key as { value?: unknown }).value === key && pair.key.range)
      return pair.key.range[0];
  }
  return undefined;
}

/** Where the first alias whose anchor is not defined before it sits, if any. */
function unresolvedAliasOffset(doc: Document.Parsed): number | undefined {
  let at: number | undefined;
  visit(doc, {
    Alias(_key, node) {
      if (node.resolve(doc) === undefined && node.range) {
        at = node.range[0];
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return at;
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}
