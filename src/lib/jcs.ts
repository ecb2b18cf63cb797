import canonicalizeImport from 'canonicalize';

// canonicalize ships CJS with a default export; normalise its shape once.
const canonicalize = canonicalizeImport as unknown as (v: unknown) => string | undefined;

/** RFC 8785 (JCS) canonical JSON text of a value. Throws on values JSON cannot carry. */
export function jcs(value: unknown): string {
  const s = canonicalize(value);
  if (s === undefined) throw new TypeError('value has no JSON representation');
  return s;
}
