/**
 * envoy.type.matcher.v3.StringMatcher and RegexMatcher. Envoy's regexes are
 * RE2 and always match the whole input; JS RegExp is close enough once the
 * pattern is anchored and the RE2-only syntax is translated, and constructs
 * RE2 rejects (lookaround, backreferences) are rejected here too.
 */
import { decodeError, obj, optBool, optStr, type Wire } from '../state/wire.js';

export type StringMatcher =
  | { kind: 'exact'; value: string; ignoreCase: boolean }
  | { kind: 'prefix'; value: string; ignoreCase: boolean }
  | { kind: 'suffix'; value: string; ignoreCase: boolean }
  | { kind: 'contains'; value: string; ignoreCase: boolean }
  | { kind: 'regex'; regex: RegExp; source: string };

const RE2_UNSUPPORTED: Array<[RegExp, string]> = [
  [/\(\?<?[=!]/, 'lookaround assertions'],
  [/\\[1-9]/, 'backreferences'],
];

/** Compiles an RE2 pattern into a JS RegExp that must match the whole input. */
export function compileFullMatch(pattern: string, path: string): RegExp {
  for (const [re, what] of RE2_UNSUPPORTED) {
    if (re.test(pattern))
      throw decodeError(path, `regex ${JSON.stringify(pattern)} uses ${what}, which RE2 does not support`);
  }
  // No `u` flag: RE2 accepts escaped punctuation (`\:`) that unicode-mode JS rejects.
  let flags = '';
  let body = pattern.replace(/\(\?P</g, '(?<');
  const lead = /^\(\?([ims]+)\)/.exec(body);
  if (lead?.[1]) {
    for (const f of lead[1]) if (!flags.includes(f)) flags += f;
    body = body.slice(lead[0].length);
  }
  try {
    return new RegExp(`^(?:${body})$`, flags);
  } catch (err) {
    throw decodeError(path, `regex ${JSON.stringify(pattern)} does not compile: ${(err as Error).message}`);
  }
}

/** envoy.type.matcher.v3.RegexMatcher (`{ regex, google_re2? }`). */
export function parseRegexMatcher(v: unknown, path: string): RegExp {
  const m = obj(v, path);
  const source = optStr(m.regex, `${path}.regex`);
  if (source === undefined) throw decodeError(path, 'regex is required');
  return compileFullMatch(source, `${path}.regex`);
}

export function parseStringMatcher(v: unknown, path: string): StringMatcher {
  const m: Wire = obj(v, path);
  const ignoreCase = optBool(m.ignore_case, `${path}.ignore_case`) ?? false;
  for (const kind of ['exact', 'prefix', 'suffix', 'contains'] as const) {
    const value = optStr(m[kind], `${path}.${kind}`);
    if (value !== undefined) {
      if (value === '' && kind !== 'exact') throw decodeError(`${path}.${kind}`, 'must not be empty');
      return { kind, value: ignoreCase ? value.toLowerCase() : value, ignoreCase };
    }
  }
  if (m.safe_regex !== undefined) {
    const regex = parseRegexMatcher(m.safe_regex, `${path}.safe_regex`);
    return { kind: 'regex', regex, source: regex.source };
  }
  throw decodeError(path, 'expected one of exact, prefix, suffix, contains, safe_regex');
}

export function matchString(m: StringMatcher, input: string): boolean {
  if (m.kind === 'regex') return m.regex.test(input);
  const s = m.ignoreCase ? input.toLowerCase() : input;
  switch (m.kind) {
    case 'exact':
      return s === m.value;
    case 'prefix':
      return s.startsWith(m.value);
    case 'suffix':
      return s.endsWith(m.value);
    case 'contains':
      return s.includes(m.value);
  }
}
