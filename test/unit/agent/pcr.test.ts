import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TPM_ALG } from '../../../src/attestation/tpm2/algorithms.js';
import { banksOfSelection, formatPcrList, parsePcrList, sameSelection, splitPcrValues } from '../../../src/cli/agent/pcr.js';

describe('parsePcrList', () => {
  it('parses one and several banks, sorting indices', () => {
    expect(parsePcrList('sha256:0,1,2,3,4,5,6,7')).toEqual([{ bank: 'sha256', indices: [0, 1, 2, 3, 4, 5, 6, 7] }]);
    expect(parsePcrList('sha256:7,0+sha1:23')).toEqual([
      { bank: 'sha256', indices: [0, 7] },
      { bank: 'sha1', indices: [23] },
    ]);
  });

  for (const bad of ['', ' ', 'sha256', 'sha256:', 'sha256:24', 'sha256:1,1', 'md5:0', 'sha256:0+sha256:1', 'sha256:-1', 'sha256:0,,1', 'sha256:a', 'sha256:001']) {
    it(`rejects "${bad}" with ERR_BAD_REQUEST`, () => {
      expect(() => parsePcrList(bad)).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    });
  }

  it('round-trips through formatPcrList', () => {
    expect(formatPcrList(parsePcrList('sha1:3,0+sha256:10,2'))).toBe('sha1:0,3+sha256:2,10');
  });
});

describe('splitPcrValues', () => {
  it('splits by digest size in selection order', () => {
    const sel = parsePcrList('sha256:0,7+sha1:1');
    const a = Buffer.alloc(32, 0xaa);
    const b = Buffer.alloc(32, 0xbb);
    const c = Buffer.alloc(20, 0xcc);
    expect(splitPcrValues(sel, Buffer.concat([a, b, c]))).toEqual({
      sha256: { '0': a.toString('hex'), '7': b.toString('hex') },
      sha1: { '1': c.toString('hex') },
    });
  });

  it('rejects a short and a long file with ERR_TPM_MARSHAL', () => {
    const sel = parsePcrList('sha256:0,1');
    expect(() => splitPcrValues(sel, Buffer.alloc(63))).toThrow(expect.objectContaining({ code: 'ERR_TPM_MARSHAL' }));
    expect(() => splitPcrValues(sel, Buffer.alloc(65))).toThrow(expect.objectContaining({ code: 'ERR_TPM_MARSHAL' }));
    expect(() => splitPcrValues(sel, Buffer.alloc(0))).toThrow(expect.objectContaining({ code: 'ERR_TPM_MARSHAL' }));
  });

  it('concatenating the split values gives back the file (property)', () => {
    const banks = ['sha1', 'sha256', 'sha384', 'sha512'] as const;
    const size = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.constantFrom(...banks), { minLength: 1, maxLength: 4 }),
        fc.uniqueArray(fc.integer({ min: 0, max: 23 }), { minLength: 1, maxLength: 24 }),
        fc.integer({ min: 0, max: 255 }),
        (bs, idx, seed) => {
          const sel = bs.map((bank) => ({ bank, indices: [...idx].sort((x, y) => x - y) }));
          const total = bs.reduce((n, b) => n + size[b] * idx.length, 0);
          const file = Buffer.from(Array.from({ length: total }, (_, i) => (i * 7 + seed) & 0xff));
          const out = splitPcrValues(sel, file);
          const joined = Buffer.concat(sel.flatMap((s) => s.indices.map((i) => Buffer.from(out[s.bank]![String(i)]!, 'hex'))));
          expect(joined).toEqual(file);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('selection helpers', () => {
  it('maps a TPM selection to banks by hash name', () => {
    expect(banksOfSelection([{ hashAlg: TPM_ALG.SHA256, indices: [0, 7], sizeofSelect: 3 }])).toEqual([{ bank: 'sha256', indices: [0, 7] }]);
    expect(() => banksOfSelection([{ hashAlg: TPM_ALG.SM3_256, indices: [0], sizeofSelect: 3 }])).toThrow(expect.objectContaining({ code: 'ERR_TPM_UNSUPPORTED_ALG' }));
  });

  it('compares selections ignoring bank order only', () => {
    expect(sameSelection(parsePcrList('sha1:0+sha256:1'), parsePcrList('sha256:1+sha1:0'))).toBe(true);
    expect(sameSelection(parsePcrList('sha256:0,1'), parsePcrList('sha256:0'))).toBe(false);
    expect(sameSelection(parsePcrList('sha256:0'), parsePcrList('sha1:0'))).toBe(false);
    expect(sameSelection(parsePcrList('sha256:0'), parsePcrList('sha256:0+sha1:0'))).toBe(false);
  });
});
