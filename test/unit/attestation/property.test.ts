import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkAkPublic } from '../../../src/attestation/ak.js';
import { trimCertificatePadding } from '../../../src/attestation/ek-chain.js';
import { verifyQuote } from '../../../src/attestation/quote.js';
import { parseTpmsAttest } from '../../../src/attestation/tpm2/attest.js';
import { parseEncryptedSecret, parseIdObject, readCredentialFile } from '../../../src/attestation/tpm2/credential.js';
import { parsePcrSelection } from '../../../src/attestation/tpm2/pcr-selection.js';
import { parseTpm2bPublic, parseTpmtPublic } from '../../../src/attestation/tpm2/public.js';
import { parseTpmtSignature } from '../../../src/attestation/tpm2/signature.js';
import { CustosError } from '../../../src/lib/errors.js';
import { quoteVector, vec } from './vectors.js';

type Mutation = { kind: 'flip'; at: number[]; xor: number[] } | { kind: 'truncate'; keep: number } | { kind: 'append'; extra: Uint8Array } | { kind: 'splice'; at: number; bytes: Uint8Array };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), xor: fc.array(fc.integer({ min: 1, max: 255 }), { minLength: 4, maxLength: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), keep: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('append' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }) },
);

function apply(b: Buffer, m: Mutation): Buffer {
  switch (m.kind) {
    case 'flip': {
      const out = Buffer.from(b);
      // Distinct positions, each XORed with a non-zero byte: the result always differs.
      const pos = [...new Set(m.at.map((a) => a % b.length))];
      pos.forEach((p, i) => (out[p]! ^= m.xor[i]!));
      return out;
    }
    case 'truncate':
      return b.subarray(0, m.keep % b.length);
    case 'append':
      return Buffer.concat([b, m.extra]);
    case 'splice': {
      const at = m.at % b.length;
      const out = Buffer.from(b);
      Buffer.from(m.bytes).copy(out, at);
      return out.equals(b) ? Buffer.concat([b, m.bytes]) : out;
    }
  }
}

describe('mutated quotes and signatures never verify (10,000 runs)', () => {
  const cases = [
    { ak: checkAkPublic(vec('ak-rsa.pub')), q: quoteVector('quote-rsa-sha256') },
    { ak: checkAkPublic(vec('ak-ecc.pub')), q: quoteVector('quote-ecc-sha256') },
  ];
  it('holds', () => {
    for (const c of cases) {
      expect(verifyQuote({ akPublic: c.ak, quote: c.q.quote, signature: c.q.signature, pcrs: c.q.pcrs, expectedExtraData: c.q.nonce, requiredSelection: { bank: c.q.bank, indices: c.q.indices } }).ok).toBe(true);
    }
    fc.assert(
      fc.property(fc.nat({ max: cases.length - 1 }), fc.boolean(), mutation, (which, onQuote, m) => {
        const c = cases[which]!;
        const quote = onQuote ? apply(c.q.quote, m) : c.q.quote;
        const signature = onQuote ? c.q.signature : apply(c.q.signature, m);
        try {
          const v = verifyQuote({ akPublic: c.ak, quote, signature, pcrs: c.q.pcrs, expectedExtraData: c.q.nonce, requiredSelection: { bank: c.q.bank, indices: c.q.indices } });
          return v.ok === false && v.failures.length > 0;
        } catch (e) {
          return e instanceof CustosError;
        }
      }),
      { numRuns: 10_000 },
    );
  });
});

describe('parsers: random and mutated bytes only ever throw CustosError', () => {
  const parsers: Array<[string, (b: Buffer) => unknown, Buffer]> = [
    ['TPM2B_PUBLIC', parseTpm2bPublic, vec('ak-rsa.pub')],
    ['TPMT_PUBLIC', parseTpmtPublic, vec('ek-ecc384.pub').subarray(2)],
    ['checkAkPublic', checkAkPublic, vec('ak-ecc.pub')],
    ['TPMS_ATTEST', parseTpmsAttest, vec('quote-rsa-sha256.quote')],
    ['TPMT_SIGNATURE', parseTpmtSignature, vec('quote-ecc-sha256.sig')],
    ['TPML_PCR_SELECTION', parsePcrSelection, Buffer.from([0, 0, 0, 1, 0, 0x0b, 3, 0x8f, 0, 0])],
    ['TPM2B_ID_OBJECT', parseIdObject, readCredentialFile(vec('credential-rsa.bin')).credentialBlob],
    ['TPM2B_ENCRYPTED_SECRET', parseEncryptedSecret, readCredentialFile(vec('credential-ecc384.bin')).encryptedSecret],
    ['credential file', readCredentialFile, vec('credential-rsa.bin')],
    ['certificate DER', trimCertificatePadding, vec('ek-ecc384-cert.nv.der')],
  ];
  const onlyCustos = (f: (b: Buffer) => unknown, b: Buffer): boolean => {
    try {
      f(b);
      return true;
    } catch (e) {
      return e instanceof CustosError;
    }
  };
  for (const [name, f, valid] of parsers) {
    it(name, () => {
      expect(onlyCustos(f, valid)).toBe(true);
      fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (b) => onlyCustos(f, Buffer.from(b))), { numRuns: 1000 });
      fc.assert(fc.property(mutation, (m) => onlyCustos(f, apply(valid, m))), { numRuns: 1000 });
    });
  }
});
