/**
 * Finds files that live beside the sources (the .proto, the built addon) whether this
 * module runs from certs/ under tsx or from dist/certs/ after `tsc`, which copies
 * neither.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export function workloadApiAsset(relative: string): string {
  const beside = fileURLToPath(new URL(relative, import.meta.url));
  if (existsSync(beside)) return beside;
  const fromDist = fileURLToPath(new URL(`../../../certs/workload-api/${relative}`, import.meta.url));
  return existsSync(fromDist) ? fromDist : beside;
}
