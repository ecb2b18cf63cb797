import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkAkPublic } from '../../../src/attestation/ak.js';
import { verifyQuote } from '../../../src/attestation/quote.js';
import { SoftAk } from '../../helpers/soft-tpm.js';

/**
 * The software AK of test/helpers/soft-tpm.ts (used by the benchmark) makes what custos accepts
 * from a real TPM: its TPM2B_PUBLIC passes the AK checks and its quotes pass verifyQuote; a
 * changed byte, another nonce or other PCR values do not.
 */
const PCRS = [Buffer.alloc(32, 0x11), Buffer.alloc(32, 0x22)];

function input(ak: SoftAk, q: { quote: string; signature: string; pcrs: { sha256: Record<string, string> } }, nonce: Buffer) {
  return {
    akPublic: checkAkPublic(ak.tpm2bPublic),
    quote: Buffer.from(q.quote, 'base64'),
    signature: Buffer.from(q.signature, 'base64'),
    pcrs: { sha256: Object.fromEntries(Object.entries(q.pcrs.sha256).map(([k, v]) => [k, Buffer.from(v, 'hex')])) },
    expectedExtraData: nonce,
    requiredSelection: { bank: 'sha256', indices: [0, 1] },
    expectedQualifiedSigner: ak.qualifiedName,
  };
}

describe('SoftAk', () => {
  for (const kind of ['ecc', 'rsa'] as const) {
    it(`${kind}: quotes verify with the AK's public area, and fail when anything changes`, () => {
      const ak = new SoftAk(kind);
      const nonce = createHash('sha256').update(randomBytes(32)).digest();
      const q = ak.quote(nonce, PCRS);
      const good = verifyQuote(input(ak, q, nonce));
      expect(good.failures).toEqual([]);
      expect(good.ok).toBe(true);

      const later = ak.quote(nonce, PCRS);
      expect(verifyQuote({ ...input(ak, later, nonce), previous: good.parsed.counters }).ok).toBe(true);
      expect(verifyQuote({ ...input(ak, q, nonce), previous: verifyQuote(input(ak, later, nonce)).parsed.counters }).failures.map((f) => f.code)).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);

      expect(verifyQuote(input(ak, q, randomBytes(32))).failures.map((f) => f.code)).toEqual(['ERR_QUOTE_NONCE_MISMATCH']);
      const tampered = Buffer.from(q.quote, 'base64');
      tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1;
      expect(verifyQuote({ ...input(ak, q, nonce), quote: tampered }).failures.map((f) => f.code)).toContain('ERR_QUOTE_SIGNATURE');
      const otherPcrs = input(ak, q, nonce);
      otherPcrs.pcrs.sha256['1'] = Buffer.alloc(32, 0x33);
      expect(verifyQuote(otherPcrs).failures.map((f) => f.code)).toEqual(['ERR_QUOTE_PCR_DIGEST']);
      expect(verifyQuote({ ...input(ak, q, nonce), akPublic: checkAkPublic(new SoftAk(kind).tpm2bPublic) }).failures.map((f) => f.code)).toEqual(['ERR_QUOTE_SIGNATURE']);
    });
  }
});
