import pkcs11js from 'pkcs11js';
import { CustosError, type ErrorCode } from '../../lib/errors.js';

/**
 * The one place where PKCS#11 return values (CKR_*, PKCS#11 v2.40 §11.1 / pkcs11t.h) become
 * custos error codes. Everything else in the adapter reports raw CKR numbers up to here.
 */

const CKR_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(pkcs11js as unknown as Record<string, unknown>)
    .filter((e): e is [string, number] => e[0].startsWith('CKR_') && typeof e[1] === 'number')
    .map(([name, value]) => [value, name]),
);

/** Symbolic name of a CKR value (`CKR_PIN_INCORRECT`), or its hex when unknown. */
export function ckrName(code: number): string {
  return CKR_NAMES.get(code) ?? `CKR_0x${code.toString(16).padStart(8, '0')}`;
}

function codes(...names: string[]): ReadonlySet<number> {
  const table = pkcs11js as unknown as Record<string, number | undefined>;
  const out = new Set<number>();
  for (const n of names) {
    const v = table[n];
    if (typeof v === 'number') out.add(v);
  }
  return out;
}

/** The token or the module went away; the next call must re-scan slots (and re-initialize). */
export const TOKEN_GONE = codes(
  'CKR_TOKEN_NOT_PRESENT', 'CKR_TOKEN_NOT_RECOGNIZED', 'CKR_DEVICE_REMOVED', 'CKR_DEVICE_ERROR',
  'CKR_DEVICE_MEMORY', 'CKR_GENERAL_ERROR', 'CKR_SLOT_ID_INVALID', 'CKR_CRYPTOKI_NOT_INITIALIZED',
  'CKR_FUNCTION_FAILED',
);
/** The session is gone but the token is fine: reopen, log in, retry once. */
export const SESSION_GONE = codes('CKR_SESSION_HANDLE_INVALID', 'CKR_SESSION_CLOSED');
/** The object handle is stale (another process destroyed or recreated it): re-find by CKA_ID. */
export const HANDLE_STALE = codes('CKR_OBJECT_HANDLE_INVALID', 'CKR_KEY_HANDLE_INVALID');
export const NOT_LOGGED_IN = codes('CKR_USER_NOT_LOGGED_IN');
/** Login refused because of the PIN: never retried in a loop (a real HSM would lock the PIN). */
export const AUTH_FAILED = codes(
  'CKR_PIN_INCORRECT', 'CKR_PIN_INVALID', 'CKR_PIN_LEN_RANGE', 'CKR_PIN_EXPIRED', 'CKR_PIN_LOCKED',
  'CKR_USER_PIN_NOT_INITIALIZED',
);
/** C_Verify's "no" (PKCS#11 v2.40 §5.11): a result, not an error. */
export const SIGNATURE_BAD = codes('CKR_SIGNATURE_INVALID', 'CKR_SIGNATURE_LEN_RANGE');
/**
 * Answers of C_CopyObject that mean "this module or this key does not allow a session copy"
 * (CKA_COPYABLE false, a module without C_CopyObject, the template refused): the key is then used
 * from its token object. Any other failure goes through the usual recovery.
 */
export const COPY_REFUSED: ReadonlySet<number> = new Set([
  ...codes('CKR_FUNCTION_NOT_SUPPORTED', 'CKR_TEMPLATE_INCONSISTENT', 'CKR_ATTRIBUTE_READ_ONLY', 'CKR_ATTRIBUTE_VALUE_INVALID', 'CKR_ATTRIBUTE_TYPE_INVALID'),
  // CKR_ACTION_PROHIBITED (PKCS#11 v2.40 §11.1; pkcs11js has no constant for it): CKA_COPYABLE false.
  0x1b,
]);
/** C_Decrypt with CKM_AES_GCM reports a failed tag as one of these (SoftHSM2: ENCRYPTED_DATA_INVALID). */
const DECRYPT_FAILED = codes(
  'CKR_ENCRYPTED_DATA_INVALID', 'CKR_ENCRYPTED_DATA_LEN_RANGE', 'CKR_DATA_INVALID', 'CKR_DATA_LEN_RANGE',
  'CKR_AEAD_DECRYPT_FAILED',
);
const DECRYPT_GENERIC = codes('CKR_GENERAL_ERROR', 'CKR_FUNCTION_FAILED');
const WRONG_PURPOSE = codes(
  'CKR_KEY_TYPE_INCONSISTENT', 'CKR_KEY_FUNCTION_NOT_PERMITTED', 'CKR_MECHANISM_INVALID',
);
const BUSY = codes('CKR_SESSION_COUNT', 'CKR_HOST_MEMORY');

/**
 * Maps a CKR value seen during `op` to a custos error code. `tokenGone` says whether the token
 * still answered C_GetTokenInfo right after the failure.
 */
export function errorCodeForCkr(code: number, op: string, tokenGone = false): ErrorCode {
  if (tokenGone) return 'ERR_HSM_UNAVAILABLE';
  if (AUTH_FAILED.has(code) || NOT_LOGGED_IN.has(code)) return 'ERR_HSM_AUTH';
  // SoftHSM2 2.6 answers a GCM tag mismatch with CKR_GENERAL_ERROR (checked in hsm/README.md);
  // with the token still present, that can only be the ciphertext, and failing closed is right.
  if (op === 'decrypt' && (DECRYPT_FAILED.has(code) || DECRYPT_GENERIC.has(code))) return 'ERR_DECRYPT';
  if (TOKEN_GONE.has(code) || SESSION_GONE.has(code) || BUSY.has(code)) return 'ERR_HSM_UNAVAILABLE';
  if (HANDLE_STALE.has(code)) return 'ERR_HSM_OBJECT_NOT_FOUND';
  if (WRONG_PURPOSE.has(code)) return 'ERR_KEY_PURPOSE';
  return 'ERR_HSM';
}

/**
 * Builds the CustosError for a CKR value. The message names the PKCS#11 function and CKR name
 * only: PINs and key material never reach it.
 */
export function ckrError(code: number, op: string, fn: string, tokenGone = false): CustosError {
  const name = ckrName(code);
  return new CustosError(errorCodeForCkr(code, op, tokenGone), `PKCS#11 ${fn} failed during ${op}: ${name}`, {
    details: { ckr: name },
  });
}
