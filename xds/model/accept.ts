/**
 * Per-object acceptance (the `object` policy of a source): a bad object is left
 * out, or replaced by its last accepted version, and the rest is applied.
 * Leaving one out can break what refers to it (an HTTPRoute to a dropped
 * Service), so the build repeats until the set holds; each round only removes
 * or replaces objects, so it ends.
 */
import type { ConfigError, ObjectVerdict, SourceObject } from '../sources/source.js';
import { buildModelDetailed, type ModelOptions, objectIdentity } from './build.js';
import type { MeshModel } from './types.js';

export interface PerObjectBuild {
  model: MeshModel;
  /** One per object of the input, in input order. */
  verdicts: ObjectVerdict[];
  /** id -> the version in force: the input for the next build's `previous`. */
  inForce: Map<string, SourceObject>;
  /** The objects the model was built from (accepted ones and kept previous versions). */
  used: SourceObject[];
}

export function buildModelPerObject(
  objects: readonly SourceObject[],
  previous: ReadonlyMap<string, SourceObject>,
  options: ModelOptions = {},
): PerObjectBuild {
  const ids = objects.map((o, i) => objectIdentity(o.value) ?? `#${i}`);
  /** Per input index: the object used now (the input, its previous version) or undefined once dropped. */
  const current: (SourceObject | undefined)[] = [...objects];
  const errors = new Map<number, ConfigError[]>();
  for (;;) {
    const live: number[] = [];
    for (const [i, o] of current.entries()) if (o) live.push(i);
    const built = buildModelDetailed(
      live.map((i) => current[i]!),
      options,
    );
    if (built.model) {
      const verdicts: ObjectVerdict[] = objects.map((object, i) => {
        const used = current[i];
        const state = used === object ? 'accepted' : used ? 'kept-previous' : 'rejected';
        return { id: ids[i]!, object, state, errors: errors.get(i) ?? [] };
      });
      const inForce = new Map<string, SourceObject>();
      for (const i of live) inForce.set(ids[i]!, current[i]!);
      return { model: built.model, verdicts, inForce, used: live.map((i) => current[i]!) };
    }
    let progressed = false;
    for (const [k, list] of built.objectErrors) {
      const i = live[k]!;
      const now = current[i]!;
      if (now === objects[i]) {
        errors.set(i, list);
        const prev = previous.get(ids[i]!);
        current[i] = prev !== undefined && !sameValue(prev, now) ? prev : undefined;
      } else {
        // The previous version no longer holds either (e.g. what it refers to is gone).
        current[i] = undefined;
      }
      progressed = true;
    }
    // Errors that belong to no object cannot be left out: nothing to apply.
    if (!progressed) throw new Error(`model rejected without blaming an object: ${built.errors[0]?.reason}`);
  }
}

function sameValue(a: SourceObject, b: SourceObject): boolean {
  return a === b || JSON.stringify(a.value) === JSON.stringify(b.value);
}
