/**
 * Finds the vendored .proto files beside the sources whether this module runs from certs/ under
 * tsx or from dist/certs/ after `tsc`, which does not copy them.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export function delegatedIdentityAsset(relative: string): string {
  const beside = fileURLToPath(new URL(relative, import.meta.url));
  if (existsSync(beside)) return beside;
  const fromDist = fileURLToPath(new URL(`../../../certs/delegated-identity/${relative}`, import.meta.url));
  return existsSync(fromDist) ? fromDist : beside;
}
