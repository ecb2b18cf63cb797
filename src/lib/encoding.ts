import { hash } from 'node:crypto';
import { CustosError, type ErrorCode } from './errors.js';

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const B64URL = /^[A-Za-z0-9_-]*$/;

/** Strict standard base64 (padding required, no whitespace). */
export function fromBase64(s: string, field: string, code: ErrorCode = 'ERR_BAD_BASE64'): Buffer {
  if (typeof s !== 'string' || !B64.test(s)) throw new CustosError(code, `${field} is not valid base64`, { details: { field } });
  return Buffer.from(s, 'base64');
}

/** Strict unpadded base64url. */
export function fromBase64Url(s: string, field: string, code: ErrorCode = 'ERR_BAD_BASE64'): Buffer {
  if (typeof s !== 'string' || !B64URL.test(s) || s.length % 4 === 1) throw new CustosError(code, `${field} is not valid base64url`, { details: { field } });
  return Buffer.from(s, 'base64url');
}

export function fromHex(s: string, field: string, code: ErrorCode = 'ERR_BAD_REQUEST'): Buffer {
  if (typeof s !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(s)) throw new CustosError(code, `${field} is not valid hex`, { details: { field } });
  return Buffer.from(s, 'hex');
}

/** SHA-256 as lowercase hex (strings hashed as UTF-8), in one crypto.hash call. */
export function sha256hex(data: Buffer | string): string {
  return hash('sha256', data, 'hex');
}
