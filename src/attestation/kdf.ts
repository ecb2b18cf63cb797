/**
 * The TPM key derivation functions (TPM 2.0 Library Part 1, §11.4.10): KDFa (SP 800-108 counter
 * mode with HMAC) and KDFe (SP 800-56A concatenation KDF). Hand-written: no maintained npm
 * library implements the TPM's labelling conventions.
 */
import { createHash, createHmac } from 'node:crypto';
import type { TpmHashInfo } from './tpm2/algorithms.js';

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

// Part 1, §11.4.10.1: a label is used with its terminating NUL octet; if it already ends in one,
// no second one is added.
function labelBytes(label: string): Buffer {
  const b = Buffer.from(label, 'latin1');
  return b.length > 0 && b[b.length - 1] === 0 ? b : Buffer.concat([b, Buffer.alloc(1)]);
}

function truncate(out: Buffer, bits: number): Buffer {
  const bytes = Math.ceil(bits / 8);
  const v = Buffer.from(out.subarray(0, bytes));
  // Part 1, §11.4.10.2: unused high-order bits of the first octet are cleared.
  if (bits % 8 !== 0) v[0]! &= (1 << (bits % 8)) - 1;
  return v;
}

/**
 * KDFa(hashAlg, key, label, contextU, contextV, bits) — Part 1, §11.4.10.2:
 * K(i) = HMAC(key, [i]32 ‖ label ‖ 00 ‖ contextU ‖ contextV ‖ [bits]32).
 */
export function kdfa(hash: TpmHashInfo, key: Buffer, label: string, contextU: Buffer, contextV: Buffer, bits: number): Buffer {
  const parts: Buffer[] = [];
  const lab = labelBytes(label);
  for (let i = 1, got = 0; got * 8 < bits; i++) {
    const h = createHmac(hash.nodeHash, key).update(u32(i)).update(lab).update(contextU).update(contextV).update(u32(bits)).digest();
    parts.push(h);
    got += h.length;
  }
  return truncate(Buffer.concat(parts), bits);
}

/**
 * KDFe(hashAlg, Z, label, partyUInfo, partyVInfo, bits) — Part 1, §11.4.10.3:
 * K(i) = H([i]32 ‖ Z ‖ label ‖ 00 ‖ partyUInfo ‖ partyVInfo).
 */
export function kdfe(hash: TpmHashInfo, z: Buffer, label: string, partyU: Buffer, partyV: Buffer, bits: number): Buffer {
  const parts: Buffer[] = [];
  const lab = labelBytes(label);
  for (let i = 1, got = 0; got * 8 < bits; i++) {
    const h = createHash(hash.nodeHash).update(u32(i)).update(z).update(lab).update(partyU).update(partyV).digest();
    parts.push(h);
    got += h.length;
  }
  return truncate(Buffer.concat(parts), bits);
}
