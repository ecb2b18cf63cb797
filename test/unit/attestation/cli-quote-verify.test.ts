import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { quoteCommand, renderQuoteVerifyReport, runQuoteVerify } from '../../../src/cli/quote/verify.js';
import { checkAkPublic } from '../../../src/attestation/ak.js';
import { VECTORS, quoteVector, vec } from './vectors.js';

let dir: string;
const v = (n: string) => join(VECTORS, n);
const rsa = quoteVector('quote-rsa-sha256');
const sha1 = quoteVector('quote-rsa-sha1bank');

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'custos-cli-quote-'));
  const json = { sha256: Object.fromEntries(Object.entries(rsa.pcrs.sha256!).map(([i, b]) => [i, b.toString('hex')])) };
  await writeFile(join(dir, 'pcrs.json'), JSON.stringify(json));
  await writeFile(join(dir, 'ak.pem'), checkAkPublic(vec('ak-rsa.pub')).key.export({ type: 'spki', format: 'pem' }));
  await writeFile(join(dir, 'policy.yaml'), `sha256:\n  0: ["${'00'.repeat(32)}", "${rsa.pcrs.sha256!['0']!.toString('hex')}"]\n  7: ${rsa.pcrs.sha256!['7']!.toString('hex')}\n`);
  await writeFile(join(dir, 'bad-policy.json'), JSON.stringify({ sha256: { 7: '11'.repeat(32) } }));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const base = () => ({ akPublic: v('ak-rsa.pub'), quote: v('quote-rsa-sha256.quote'), signature: v('quote-rsa-sha256.sig'), pcrs: v('quote-rsa-sha256.pcrs'), pcrList: 'sha256:0,1,2,3,7', nonce: rsa.nonce.toString('hex') });
const status = (r: Awaited<ReturnType<typeof runQuoteVerify>>, name: string) => r.checks.find((c) => c.name === name)?.status;

describe('runQuoteVerify', () => {
  it('binary PCR values + --pcr-list + nonce: every check passes', async () => {
    const r = await runQuoteVerify(base());
    expect(r.ok).toBe(true);
    expect(r.checks.filter((c) => c.status === 'fail')).toEqual([]);
    expect(status(r, 'akAttributes')).toBe('pass');
    expect(status(r, 'pcrPolicy')).toBe('skip');
    expect(renderQuoteVerifyReport(r)).toContain('OK: the quote verifies');
  });

  it('JSON PCR values without --pcr-list, PEM AK, YAML policy with lists', async () => {
    const r = await runQuoteVerify({ ...base(), pcrList: undefined, pcrs: join(dir, 'pcrs.json'), akPublic: join(dir, 'ak.pem'), policy: join(dir, 'policy.yaml') });
    expect(r.ok).toBe(true);
    expect(status(r, 'akAttributes')).toBe('skip');
    expect(status(r, 'pcrPolicy')).toBe('pass');
  });

  it('a policy mismatch, a wrong nonce and a missing nonce', async () => {
    const bad = await runQuoteVerify({ ...base(), policy: join(dir, 'bad-policy.json') });
    expect(bad.ok).toBe(false);
    expect(bad.checks.find((c) => c.name === 'pcrPolicy')).toMatchObject({ status: 'fail', code: 'ERR_QUOTE_PCR_POLICY' });
    const wrong = await runQuoteVerify({ ...base(), nonce: '00'.repeat(32) });
    expect(wrong.checks.find((c) => c.name === 'nonce')).toMatchObject({ status: 'fail', code: 'ERR_QUOTE_NONCE_MISMATCH' });
    expect(renderQuoteVerifyReport(wrong)).toContain('FAIL  nonce');
    const none = await runQuoteVerify({ ...base(), nonce: undefined });
    expect(none.ok).toBe(true);
    expect(status(none, 'nonce')).toBe('skip');
  });

  it('SHA-1 bank: refused unless --allow-sha1; ECC AK', async () => {
    const o = { akPublic: v('ak-rsa.pub'), quote: v('quote-rsa-sha1bank.quote'), signature: v('quote-rsa-sha1bank.sig'), pcrs: v('quote-rsa-sha1bank.pcrs'), pcrList: 'sha1:0,1,2,3,7', nonce: sha1.nonce.toString('hex') };
    const r = await runQuoteVerify(o);
    expect(r.checks.find((c) => c.name === 'hashAlg')).toMatchObject({ status: 'fail', code: 'ERR_QUOTE_HASH_ALG' });
    expect((await runQuoteVerify({ ...o, allowSha1: true })).ok).toBe(true);
    const ecc = quoteVector('quote-ecc-sha256');
    expect((await runQuoteVerify({ akPublic: v('ak-ecc.pub'), quote: v('quote-ecc-sha256.quote'), signature: v('quote-ecc-sha256.sig'), pcrs: v('quote-ecc-sha256.pcrs'), pcrList: 'sha256:0,1,2,3,7', nonce: ecc.nonce.toString('hex') })).ok).toBe(true);
  });

  it('an AK that is not a restricted signing key fails the akAttributes check', async () => {
    const r = await runQuoteVerify({ ...base(), akPublic: v('ek-rsa.pub') });
    expect(r.checks[0]).toMatchObject({ name: 'akAttributes', status: 'fail', code: 'ERR_AK_ATTRIBUTES' });
    expect(r.ok).toBe(false);
  });

  it('unusable inputs → ERR_BAD_REQUEST', async () => {
    await expect(runQuoteVerify({ ...base(), pcrList: undefined })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(runQuoteVerify({ ...base(), pcrList: 'sha256:0,1' })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(runQuoteVerify({ ...base(), pcrList: 'md5:0' })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(runQuoteVerify({ ...base(), nonce: 'xyz' })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(runQuoteVerify({ ...base(), akPublic: join(dir, 'pcrs.json') })).rejects.toMatchObject({ code: 'ERR_TPM_MARSHAL' });
  });
});

describe('quote verify command', () => {
  it('prints JSON and sets a non-zero exit code on failure', async () => {
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (out.push(String(s)), true));
    const before = process.exitCode;
    try {
      const b = base();
      await quoteCommand().exitOverride().parseAsync(['verify', '--ak-public', b.akPublic, '--quote', b.quote, '--signature', b.signature, '--pcrs', b.pcrs, '--pcr-list', b.pcrList, '--nonce', '11'.repeat(32), '--json'], { from: 'user' });
      const report = JSON.parse(out.join(''));
      expect(report.ok).toBe(false);
      expect(process.exitCode).toBe(1);
      out.length = 0;
      process.exitCode = undefined;
      await quoteCommand().exitOverride().parseAsync(['verify', '--ak-public', b.akPublic, '--quote', b.quote, '--signature', b.signature, '--pcrs', b.pcrs, '--pcr-list', b.pcrList, '--nonce', b.nonce], { from: 'user' });
      expect(out.join('')).toContain('PASS  signature');
      expect(process.exitCode).toBeUndefined();
    } finally {
      spy.mockRestore();
      process.exitCode = before;
    }
  });
});
