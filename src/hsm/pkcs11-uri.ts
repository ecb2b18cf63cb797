/**
 * RFC 7512 PKCS#11 URIs. custos names every key object with one so that operators can find it
 * with any PKCS#11 tool; a URI never carries a PIN (no `pin-value`, no `pin-source`).
 */

export type Pkcs11ObjectType = 'private' | 'public' | 'secret' | 'cert' | 'data';

export interface Pkcs11UriParts {
  token?: string;
  /** CKA_ID as lowercase hex. */
  id?: string;
  object?: string;
  type?: Pkcs11ObjectType;
}

// RFC 7512 §2.3: pk11-res-avail = unreserved / ":" / "[" / "]" / "@" / "!" / "$" / "'" / "(" /
// ")" / "*" / "+" / "," / "=" / "&" — everything else in a path attribute value is pct-encoded.
const PATH_SAFE = /[A-Za-z0-9\-._~:[\]@!$'()*+,=&]/;
const OBJECT_TYPES: readonly Pkcs11ObjectType[] = ['private', 'public', 'secret', 'cert', 'data'];

function encodeText(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && PATH_SAFE.test(ch) ? ch : `%${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/**
 * Formats `pkcs11:token=…;id=%..;object=…;type=…` (RFC 7512 §2.3). The id is always fully
 * percent-encoded byte by byte, as §2.3 recommends for binary CKA_ID values.
 *
 * @throws TypeError when `id` is not an even-length hex string.
 */
export function formatPkcs11Uri(parts: Pkcs11UriParts): string {
  const attrs: string[] = [];
  if (parts.token !== undefined) attrs.push(`token=${encodeText(parts.token)}`);
  if (parts.id !== undefined) {
    if (!/^(?:[0-9a-fA-F]{2})*$/.test(parts.id)) throw new TypeError('PKCS#11 URI id must be hex');
    attrs.push(`id=${parts.id.toLowerCase().replace(/(..)/g, '%$1')}`);
  }
  if (parts.object !== undefined) attrs.push(`object=${encodeText(parts.object)}`);
  if (parts.type !== undefined) attrs.push(`type=${parts.type}`);
  return `pkcs11:${attrs.join(';')}`;
}

function decodeBytes(value: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const ch = value[i] as string;
    if (ch === '%') {
      const hex = value.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new TypeError('bad percent-encoding in PKCS#11 URI');
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(ch, 'utf8'));
    }
  }
  return Buffer.from(bytes);
}

/**
 * Parses the path part of a PKCS#11 URI (token, id, object, type). Query attributes are ignored
 * except that a `pin-value` is rejected, because custos never accepts a PIN inside a URI.
 *
 * @throws TypeError when the string is not a PKCS#11 URI, repeats an attribute, has an unknown
 *   `type`, bad percent-encoding, or carries a PIN.
 */
export function parsePkcs11Uri(uri: string): Pkcs11UriParts {
  if (!uri.startsWith('pkcs11:')) throw new TypeError('not a PKCS#11 URI');
  const rest = uri.slice('pkcs11:'.length);
  const q = rest.indexOf('?');
  const path = q === -1 ? rest : rest.slice(0, q);
  const query = q === -1 ? '' : rest.slice(q + 1);
  if (query.split('&').some((a) => a.split('=')[0] === 'pin-value')) {
    throw new TypeError('PKCS#11 URI must not carry a PIN');
  }
  const out: Pkcs11UriParts = {};
  const seen = new Set<string>();
  for (const attr of path === '' ? [] : path.split(';')) {
    const eq = attr.indexOf('=');
    if (eq <= 0) throw new TypeError('malformed PKCS#11 URI attribute');
    const name = attr.slice(0, eq);
    const value = attr.slice(eq + 1);
    if (seen.has(name)) throw new TypeError('repeated PKCS#11 URI attribute');
    seen.add(name);
    if (name === 'token') out.token = decodeBytes(value).toString('utf8');
    else if (name === 'object') out.object = decodeBytes(value).toString('utf8');
    else if (name === 'id') out.id = decodeBytes(value).toString('hex');
    else if (name === 'type') {
      if (!(OBJECT_TYPES as readonly string[]).includes(value)) throw new TypeError('unknown PKCS#11 object type');
      out.type = value as Pkcs11ObjectType;
    }
  }
  return out;
}
