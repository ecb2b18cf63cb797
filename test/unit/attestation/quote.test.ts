import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkAkPublic } from '../../../src/attestation/ak.js';
import { akQualifiedNameUnderEk } from '../../../src/attestation/qualified-name.js';
import { verifyQuote, type VerifyQuoteInput } from '../../../src/attestation/quote.js';
import { TPM_ALG } from '../../../src/attestation/tpm2/algorithms.js';
import { parseTpmsAttest } from '../../../src/attestation/tpm2/attest.js';
import { parseTpm2bPublic } from '../../../src/attestation/tpm2/public.js';
import { writeTpmtSignature } from '../../../src/attestation/tpm2/signature.js';
import { isCustosError } from '../../../src/lib/errors.js';
import { quoteVector, vec, type QuoteVector } from './vectors.js';

const akRsa = checkAkPublic(vec('ak-rsa.pub'));
const akEcc = checkAkPublic(vec('ak-ecc.pub'));
const akEcc384 = checkAkPublic(vec('ak-ecc-under-p384.pub'));
const qRsa = quoteVector('quote-rsa-sha256');
const qEcc = quoteVector('quote-ecc-sha256');
const qSha1 = quoteVector('quote-rsa-sha1bank');
const qEcc384 = quoteVector('quote-ecc384ek-sha256');

function input(ak: typeof akRsa, q: QuoteVector, over: Partial<VerifyQuoteInput> = {}): VerifyQuoteInput {
  return {
    akPublic: ak,
    quote: q.quote,
    signature: q.signature,
    pcrs: q.pcrs,
    expectedExtraData: q.nonce,
    requiredSelection: { bank: q.bank, indices: q.indices },
    ...over,
  };
}

function codes(v: ReturnType<typeof verifyQuote>): string[] {
  return v.failures.map((f) => f.code);
}

describe('verifyQuote on swtpm vectors', () => {
  it('accepts the RSA AK quote over sha256:0,1,2,3,7', () => {
    const v = verifyQuote(input(akRsa, qRsa));
    expect(v.failures).toEqual([]);
    expect(v.ok).toBe(true);
    expect(v.parsed.selection).toEqual([{ bank: 'sha256', indices: [0, 1, 2, 3, 7] }]);
    expect(v.parsed.signatureAlg).toBe('RSASSA');
    expect(v.parsed.clockInfo.safe).toBe(true);
    expect(v.checks.map((c) => c.name)).toEqual(['magic', 'type', 'hashAlg', 'signature', 'signer', 'nonce', 'pcrSelection', 'pcrDigest', 'pcrPolicy', 'clock', 'safe']);
  });

  it('accepts the ECC AK quotes (under the RSA EK and under the P-384 EK)', () => {
    expect(verifyQuote(input(akEcc, qEcc)).failures).toEqual([]);
    expect(verifyQuote(input(akEcc384, qEcc384)).failures).toEqual([]);
    expect(verifyQuote(input(akEcc, qEcc)).parsed.signatureAlg).toBe('ECDSA');
  });

  it('works from a parsed TPMT_PUBLIC and with an explicit KeyObject', () => {
    expect(verifyQuote(input(akRsa, qRsa, { akPublic: akRsa.public })).ok).toBe(true);
    expect(verifyQuote(input(akRsa, qRsa, { akPublic: akRsa.public, akKey: akRsa.key })).ok).toBe(true);
  });

  it('the sha1-bank quote fails with ERR_QUOTE_HASH_ALG by default and passes with allowSha1', () => {
    expect(codes(verifyQuote(input(akRsa, qSha1)))).toEqual(['ERR_QUOTE_HASH_ALG']);
    expect(verifyQuote(input(akRsa, qSha1, { allowSha1: true })).ok).toBe(true);
  });

  it('wrong nonce → ERR_QUOTE_NONCE_MISMATCH only', () => {
    const n = Buffer.from(qRsa.nonce);
    n[0]! ^= 0xff;
    expect(codes(verifyQuote(input(akRsa, qRsa, { expectedExtraData: n })))).toEqual(['ERR_QUOTE_NONCE_MISMATCH']);
    expect(codes(verifyQuote(input(akRsa, qRsa, { expectedExtraData: qRsa.nonce.subarray(1) })))).toEqual(['ERR_QUOTE_NONCE_MISMATCH']);
  });

  it('a quote by another AK → ERR_QUOTE_SIGNATURE', () => {
    expect(codes(verifyQuote(input(akEcc, qRsa)))).toContain('ERR_QUOTE_SIGNATURE');
    const other = checkAkPublic(vec('ak-ecc-under-p384.pub'));
    expect(codes(verifyQuote(input(other, qEcc)))).toEqual(['ERR_QUOTE_SIGNATURE', 'ERR_QUOTE_SIGNER']);
  });

  it('PCR values that do not match the digest → ERR_QUOTE_PCR_DIGEST', () => {
    const pcrs = { sha256: { ...qRsa.pcrs.sha256, '7': Buffer.alloc(32, 7) } };
    expect(codes(verifyQuote(input(akRsa, qRsa, { pcrs })))).toEqual(['ERR_QUOTE_PCR_DIGEST']);
    const missing = { sha256: { ...qRsa.pcrs.sha256 } };
    delete missing.sha256['3'];
    const v = verifyQuote(input(akRsa, qRsa, { pcrs: missing }));
    expect(codes(v)).toEqual(['ERR_QUOTE_PCR_DIGEST']);
    expect(v.failures[0]!.detail).toContain('sha256:3');
    const short = { sha256: { ...qRsa.pcrs.sha256, '0': Buffer.alloc(20) } };
    expect(codes(verifyQuote(input(akRsa, qRsa, { pcrs: short })))).toEqual(['ERR_QUOTE_PCR_DIGEST']);
  });

  it('a PCR digest verified before does not let other values through (the digest memo compares every byte)', () => {
    expect(verifyQuote(input(akRsa, qRsa)).ok).toBe(true);
    expect(verifyQuote(input(akRsa, qRsa)).ok).toBe(true);
    for (const i of qRsa.indices) {
      for (const byte of [0, 31]) {
        const v = Buffer.from(qRsa.pcrs.sha256![String(i)]!);
        v[byte]! ^= 0x01;
        const pcrs = { sha256: { ...qRsa.pcrs.sha256, [String(i)]: v } };
        expect(codes(verifyQuote(input(akRsa, qRsa, { pcrs })))).toEqual(['ERR_QUOTE_PCR_DIGEST']);
      }
    }
    // Values swapped between two PCRs: the same bytes in another order.
    const swapped = { sha256: { ...qRsa.pcrs.sha256, '0': qRsa.pcrs.sha256!['1']!, '1': qRsa.pcrs.sha256!['0']! } };
    if (!qRsa.pcrs.sha256!['0']!.equals(qRsa.pcrs.sha256!['1']!)) expect(codes(verifyQuote(input(akRsa, qRsa, { pcrs: swapped })))).toEqual(['ERR_QUOTE_PCR_DIGEST']);
    expect(verifyQuote(input(akRsa, qRsa)).ok).toBe(true);
  });

  it('selection missing an index, an extra index or another bank → ERR_QUOTE_PCR_SELECTION', () => {
    expect(codes(verifyQuote(input(akRsa, qRsa, { requiredSelection: { bank: 'sha256', indices: [0, 1, 2, 3, 7, 8] } })))).toEqual(['ERR_QUOTE_PCR_SELECTION']);
    expect(codes(verifyQuote(input(akRsa, qRsa, { requiredSelection: { bank: 'sha256', indices: [0, 1, 2, 3] } })))).toEqual(['ERR_QUOTE_PCR_SELECTION']);
    expect(codes(verifyQuote(input(akRsa, qRsa, { requiredSelection: { bank: 'sha384', indices: [0, 1, 2, 3, 7] } })))).toEqual(['ERR_QUOTE_PCR_SELECTION']);
  });

  it('reference values: several allowed per PCR; a mismatch names the PCR', () => {
    const ok = verifyQuote(input(akRsa, qRsa, { referenceValues: { 0: [Buffer.alloc(32, 1), qRsa.pcrs.sha256!['0']!], 7: [qRsa.pcrs.sha256!['7']!] } }));
    expect(ok.ok).toBe(true);
    const bad = verifyQuote(input(akRsa, qRsa, { referenceValues: { 0: [qRsa.pcrs.sha256!['0']!], 7: [Buffer.alloc(32)] } }));
    expect(codes(bad)).toEqual(['ERR_QUOTE_PCR_POLICY']);
    expect(bad.failures[0]!.detail).toContain('sha256:7');
    expect(bad.failures[0]!.detail).not.toContain('sha256:0');
    const notQuoted = verifyQuote(input(akRsa, qRsa, { referenceValues: { 9: [Buffer.alloc(32)] } }));
    expect(codes(notQuoted)).toEqual(['ERR_QUOTE_PCR_POLICY']);
  });

  it('counters: rollback of resetCount, restartCount or clock → ERR_QUOTE_CLOCK_ROLLBACK', () => {
    const c = verifyQuote(input(akRsa, qRsa)).parsed.counters;
    expect(verifyQuote(input(akRsa, qRsa, { previous: c })).ok).toBe(true);
    expect(verifyQuote(input(akRsa, qRsa, { previous: { ...c, clock: c.clock - 1n } })).ok).toBe(true);
    expect(codes(verifyQuote(input(akRsa, qRsa, { previous: { ...c, clock: c.clock + 1n } })))).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
    expect(codes(verifyQuote(input(akRsa, qRsa, { previous: { ...c, resetCount: c.resetCount + 1 } })))).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
    expect(codes(verifyQuote(input(akRsa, qRsa, { previous: { ...c, restartCount: c.restartCount + 1 } })))).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
    // After a TPM reset the clock may be lower than before.
    expect(verifyQuote(input(akRsa, qRsa, { previous: { clock: c.clock + 1_000_000n, resetCount: c.resetCount - 1, restartCount: c.restartCount + 5 } })).ok).toBe(c.resetCount > 0);
  });

  it('qualifiedSigner: equals the one computed from the EK and AK Names; another → ERR_QUOTE_SIGNER', () => {
    const qs = akQualifiedNameUnderEk(vec('ek-rsa.name'), akRsa.name);
    expect(parseTpmsAttest(qRsa.quote).qualifiedSigner).toEqual(qs);
    expect(verifyQuote(input(akRsa, qRsa, { expectedQualifiedSigner: qs })).ok).toBe(true);
    const other = akQualifiedNameUnderEk(vec('ek-ecc384.name'), akRsa.name);
    expect(codes(verifyQuote(input(akRsa, qRsa, { expectedQualifiedSigner: other })))).toEqual(['ERR_QUOTE_SIGNER']);
  });

  it('lists every failed check at once', () => {
    const v = verifyQuote(
      input(akEcc384, qSha1, {
        expectedExtraData: Buffer.alloc(32),
        requiredSelection: { bank: 'sha256', indices: [0] },
        pcrs: {},
        referenceValues: { 0: [Buffer.alloc(32)] },
        previous: { clock: 1n << 60n, resetCount: 2 ** 31, restartCount: 0 },
      }),
    );
    expect(new Set(codes(v))).toEqual(
      new Set(['ERR_QUOTE_HASH_ALG', 'ERR_QUOTE_SIGNATURE', 'ERR_QUOTE_SIGNER', 'ERR_QUOTE_NONCE_MISMATCH', 'ERR_QUOTE_PCR_SELECTION', 'ERR_QUOTE_PCR_DIGEST', 'ERR_QUOTE_PCR_POLICY', 'ERR_QUOTE_CLOCK_ROLLBACK']),
    );
  });

  it('unknown required bank → ERR_BAD_REQUEST; structure errors throw ERR_TPM_MARSHAL', () => {
    expect(() => verifyQuote(input(akRsa, qRsa, { requiredSelection: { bank: 'md5', indices: [0] } }))).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    for (const q of [qRsa.quote.subarray(0, qRsa.quote.length - 1), Buffer.concat([qRsa.quote, Buffer.alloc(1)])]) {
      try {
        verifyQuote(input(akRsa, qRsa, { quote: q }));
        expect.unreachable();
      } catch (e) {
        expect(isCustosError(e, 'ERR_TPM_MARSHAL')).toBe(true);
      }
    }
    expect(() => verifyQuote(input(akRsa, qRsa, { signature: qRsa.signature.subarray(0, 10) }))).toThrow(expect.objectContaining({ code: 'ERR_TPM_MARSHAL' }));
  });
});

describe('verifyQuote on synthetic quotes (field-level tampering, re-signed)', () => {
  // A software key stands in for the AK so every field can be changed and the quote re-signed:
  // this isolates each check from the signature check.
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const akPub = akEcc.public;

  function build(f: { magic?: number; type?: number; extra?: Buffer; safe?: number; clock?: bigint; reset?: number; restart?: number; sha1Bank?: boolean; qs?: Buffer }) {
    const values = [Buffer.alloc(32, 1), Buffer.alloc(32, 2)];
    const sel = Buffer.from([0, 0, 0, 1, 0, f.sha1Bank ? TPM_ALG.SHA1 : TPM_ALG.SHA256, 3, 0x03, 0, 0]);
    const pcrBank = f.sha1Bank ? [Buffer.alloc(20, 1), Buffer.alloc(20, 2)] : values;
    const digest = createHash('sha256').update(Buffer.concat(pcrBank)).digest();
    const qs = f.qs ?? Buffer.concat([Buffer.from([0, 0x0b]), Buffer.alloc(32, 9)]);
    const extra = f.extra ?? Buffer.alloc(32, 5);
    const head = Buffer.alloc(6);
    head.writeUInt32BE(f.magic ?? 0xff544347);
    head.writeUInt16BE(f.type ?? 0x8018, 4);
    const clock = Buffer.alloc(17 + 8);
    clock.writeBigUInt64BE(f.clock ?? 1000n, 0);
    clock.writeUInt32BE(f.reset ?? 3, 8);
    clock.writeUInt32BE(f.restart ?? 4, 12);
    clock.writeUInt8(f.safe ?? 1, 16);
    const tpm2b = (b: Buffer) => Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
    const quote = Buffer.concat([head, tpm2b(qs), tpm2b(extra), clock, sel, tpm2b(digest)]);
    const raw = sign('sha256', quote, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    const signature = writeTpmtSignature({ sigAlg: TPM_ALG.ECDSA, hash: { id: TPM_ALG.SHA256, name: 'SHA256', kind: 'hash', digestSize: 32, nodeHash: 'sha256' }, r: raw.subarray(0, 32), s: raw.subarray(32) });
    const bank = f.sha1Bank ? 'sha1' : 'sha256';
    return {
      akPublic: akPub,
      akKey: publicKey,
      quote,
      signature,
      pcrs: { [bank]: { 0: pcrBank[0]!, 1: pcrBank[1]! } },
      expectedExtraData: Buffer.alloc(32, 5),
      requiredSelection: { bank, indices: [0, 1] },
    } satisfies VerifyQuoteInput;
  }

  it('the untouched synthetic quote verifies', () => {
    expect(verifyQuote(build({})).failures).toEqual([]);
  });
  it('wrong magic → ERR_QUOTE_MAGIC', () => {
    expect(codes(verifyQuote(build({ magic: 0xff544348 })))).toEqual(['ERR_QUOTE_MAGIC']);
  });
  it('another attestation type → ERR_QUOTE_TYPE (selection cannot apply)', () => {
    const b = build({});
    // Re-frame as TPM_ST_ATTEST_TIME with the same tail bytes: the body stays unparsed.
    const q = Buffer.from(b.quote);
    q.writeUInt16BE(0x8019, 4);
    const v = verifyQuote({ ...b, quote: q });
    expect(codes(v)).toContain('ERR_QUOTE_TYPE');
    expect(codes(v)).toContain('ERR_QUOTE_PCR_SELECTION');
  });
  it('safe = 0 → ERR_QUOTE_NOT_SAFE', () => {
    expect(codes(verifyQuote(build({ safe: 0 })))).toEqual(['ERR_QUOTE_NOT_SAFE']);
  });
  it('safe = 2 is not a TPMI_YES_NO → ERR_TPM_MARSHAL', () => {
    expect(() => verifyQuote(build({ safe: 2 }))).toThrow(expect.objectContaining({ code: 'ERR_TPM_MARSHAL' }));
  });
  it('qualifiedSigner of another nameAlg → ERR_QUOTE_SIGNER', () => {
    expect(codes(verifyQuote(build({ qs: Buffer.concat([Buffer.from([0, 0x0c]), Buffer.alloc(48)]) })))).toEqual(['ERR_QUOTE_SIGNER']);
  });
  it('SHA-1 signature hash → ERR_QUOTE_HASH_ALG unless allowed', () => {
    const b = build({});
    const raw = sign('sha1', b.quote, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    const signature = writeTpmtSignature({ sigAlg: TPM_ALG.ECDSA, hash: { id: TPM_ALG.SHA1, name: 'SHA1', kind: 'hash', digestSize: 20, nodeHash: 'sha1' }, r: raw.subarray(0, 32), s: raw.subarray(32) });
    const v = verifyQuote({ ...b, signature });
    // The PCR digest was made with SHA-256, the signing hash is SHA-1: the digest check fails too;
    // and the AK's scheme is ECDSA-SHA256, so its TPM never signs with SHA-1.
    expect(codes(v)).toEqual(['ERR_QUOTE_HASH_ALG', 'ERR_QUOTE_SIGNATURE', 'ERR_QUOTE_PCR_DIGEST']);
    expect(codes(verifyQuote({ ...b, signature, allowSha1: true }))).toEqual(['ERR_QUOTE_SIGNATURE', 'ERR_QUOTE_PCR_DIGEST']);
  });
  it("a valid signature with another hash than the AK's scheme → ERR_QUOTE_SIGNATURE", () => {
    const b = build({});
    const raw = sign('sha384', b.quote, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    const signature = writeTpmtSignature({ sigAlg: TPM_ALG.ECDSA, hash: { id: TPM_ALG.SHA384, name: 'SHA384', kind: 'hash', digestSize: 48, nodeHash: 'sha384' }, r: raw.subarray(0, 32), s: raw.subarray(32) });
    const v = verifyQuote({ ...b, signature });
    expect(v.failures.find((f) => f.code === 'ERR_QUOTE_SIGNATURE')?.detail).toMatch(/not the AK's/);
  });
  it('SHA-1 bank only → ERR_QUOTE_HASH_ALG', () => {
    expect(codes(verifyQuote(build({ sha1Bank: true })))).toEqual(['ERR_QUOTE_HASH_ALG']);
    expect(verifyQuote({ ...build({ sha1Bank: true }), allowSha1: true }).ok).toBe(true);
  });
  it('counters in the quote vs previous', () => {
    const b = build({ clock: 500n, reset: 3, restart: 4 });
    expect(codes(verifyQuote({ ...b, previous: { clock: 501n, resetCount: 3, restartCount: 4 } }))).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
    expect(codes(verifyQuote({ ...b, previous: { clock: 1n, resetCount: 4, restartCount: 0 } }))).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
    expect(codes(verifyQuote({ ...b, previous: { clock: 1n, resetCount: 3, restartCount: 5 } }))).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
    expect(verifyQuote({ ...b, previous: { clock: 9999n, resetCount: 2, restartCount: 9 } }).ok).toBe(true);
  });
  it('a firmware older than the last good quote\'s → ERR_QUOTE_CLOCK_ROLLBACK naming the firmware; the same or newer passes', () => {
    const b = build({ clock: 500n, reset: 3, restart: 4 });
    const v = verifyQuote(b);
    const fw = v.parsed.firmwareVersion;
    expect(v.parsed.counters.firmwareVersion).toBe(fw);
    const rolledBack = verifyQuote({ ...b, previous: { clock: 1n, resetCount: 3, restartCount: 4, firmwareVersion: fw + 1n } });
    expect(rolledBack.failures).toEqual([expect.objectContaining({ code: 'ERR_QUOTE_CLOCK_ROLLBACK', detail: expect.stringMatching(/firmware rolled back/) })]);
    expect(verifyQuote({ ...b, previous: { clock: 1n, resetCount: 3, restartCount: 4, firmwareVersion: fw } }).ok).toBe(true);
    expect(verifyQuote({ ...b, previous: { clock: 1n, resetCount: 3, restartCount: 4, firmwareVersion: fw > 0n ? fw - 1n : 0n } }).ok).toBe(true);
  });
});

describe('tampering with every byte of a real quote', () => {
  it('no single-byte change of the RSA or ECC quote verifies', () => {
    for (const [ak, q] of [[akRsa, qRsa], [akEcc, qEcc]] as const) {
      for (let i = 0; i < q.quote.length; i++) {
        const t = Buffer.from(q.quote);
        t[i]! ^= 0x01;
        let ok = false;
        try {
          ok = verifyQuote(input(ak, q, { quote: t })).ok;
        } catch (e) {
          expect(isCustosError(e)).toBe(true);
        }
        expect(ok, `byte ${i}`).toBe(false);
      }
      for (let i = 0; i < q.signature.length; i++) {
        const t = Buffer.from(q.signature);
        t[i]! ^= 0x80;
        let ok = false;
        try {
          ok = verifyQuote(input(ak, q, { signature: t })).ok;
        } catch (e) {
          expect(isCustosError(e)).toBe(true);
        }
        expect(ok, `sig byte ${i}`).toBe(false);
      }
    }
  });
  it('parsePublic of the vector AKs round-trips the Name files', () => {
    expect(checkAkPublic(vec('ak-rsa.pub')).name).toEqual(vec('ak-rsa.name'));
    expect(parseTpm2bPublic(vec('ak-ecc-under-p384.pub')).nameAlg.nodeHash).toBe('sha384');
  });
});
