import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAkPublic, type AkPublic } from '../../../src/attestation/ak.js';
import { loadTrustAnchors, parseTrustAnchors, verifyEkCertificate } from '../../../src/attestation/ek-chain.js';
import { akQualifiedNameUnderEk } from '../../../src/attestation/qualified-name.js';
import { verifyQuote, type QuoteCounters } from '../../../src/attestation/quote.js';
import { objectName, parseTpm2bPublic } from '../../../src/attestation/tpm2/public.js';
import { startSwtpm, type Swtpm } from '../../helpers/swtpm.js';
import { tpm2 } from '../../helpers/tpm2-tools.js';

let tpm: Swtpm;
let work: string;
let akRsa: AkPublic;
let akEcc: AkPublic;

beforeAll(async () => {
  tpm = await startSwtpm();
  work = await mkdtemp(join(tmpdir(), 'custos-quote-'));
  await tpm2(tpm.env, 'tpm2_createek', ['-c', 'ek-rsa.ctx', '-G', 'rsa', '-u', 'ek-rsa.pub'], work);
  await tpm2(tpm.env, 'tpm2_createek', ['-c', 'ek-ecc.ctx', '-G', 'ecc384', '-u', 'ek-ecc.pub'], work);
  await tpm2(tpm.env, 'tpm2_createak', ['-C', 'ek-rsa.ctx', '-c', 'ak-rsa.ctx', '-G', 'rsa', '-g', 'sha256', '-s', 'rsassa', '-u', 'ak-rsa.pub'], work);
  await tpm2(tpm.env, 'tpm2_createak', ['-C', 'ek-ecc.ctx', '-c', 'ak-ecc.ctx', '-G', 'ecc', '-g', 'sha256', '-s', 'ecdsa', '-u', 'ak-ecc.pub'], work);
  akRsa = checkAkPublic(await readFile(join(work, 'ak-rsa.pub')));
  akEcc = checkAkPublic(await readFile(join(work, 'ak-ecc.pub')));
});

afterAll(async () => {
  await tpm?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function quote(ak: string, nonce: Buffer, list = 'sha256:0,1,2,7') {
  const tag = randomBytes(4).toString('hex');
  await tpm2(tpm.env, 'tpm2_quote', ['-c', `${ak}.ctx`, '-l', list, '-g', 'sha256', '-q', nonce.toString('hex'), '-m', `${tag}.msg`, '-s', `${tag}.sig`, '-o', `${tag}.pcrs`, '-F', 'values'], work);
  const values = await readFile(join(work, `${tag}.pcrs`));
  const indices = list.split(':')[1]!.split(',').map(Number);
  const pcrs: Record<string, Buffer> = {};
  indices.forEach((i, n) => (pcrs[i] = values.subarray(n * 32, (n + 1) * 32)));
  return { quote: await readFile(join(work, `${tag}.msg`)), signature: await readFile(join(work, `${tag}.sig`)), pcrs: { sha256: pcrs }, indices };
}

describe('quotes from swtpm', () => {
  for (const which of ['rsa', 'ecc'] as const) {
    it(`${which} AK: verifies with the nonce, with the enrolled qualifiedSigner, and fails with another nonce`, async () => {
      const ak = which === 'rsa' ? akRsa : akEcc;
      const ekName = objectName(parseTpm2bPublic(await readFile(join(work, `ek-${which}.pub`))));
      const nonce = randomBytes(32);
      const q = await quote(`ak-${which}`, nonce);
      const base = { akPublic: ak, ...q, expectedExtraData: nonce, requiredSelection: { bank: 'sha256', indices: q.indices }, expectedQualifiedSigner: akQualifiedNameUnderEk(ekName, ak.name) };
      const good = verifyQuote(base);
      expect(good.failures).toEqual([]);
      const bad = verifyQuote({ ...base, expectedExtraData: randomBytes(32) });
      expect(bad.failures.map((f) => f.code)).toEqual(['ERR_QUOTE_NONCE_MISMATCH']);
    });
  }

  it('counters move forward across quotes and a TPM restart; an old quote then counts as rollback', async () => {
    const n1 = randomBytes(32);
    const q1 = await quote('ak-rsa', n1, 'sha256:0');
    const v1 = verifyQuote({ akPublic: akRsa, ...q1, expectedExtraData: n1, requiredSelection: { bank: 'sha256', indices: [0] } });
    expect(v1.ok).toBe(true);
    const prev: QuoteCounters = v1.parsed.counters;
    // The AK is a transient object: persist it across the restart.
    await tpm2(tpm.env, 'tpm2_evictcontrol', ['-C', 'o', '-c', 'ak-rsa.ctx', '0x81010002'], work);
    await tpm.restart();
    const n2 = randomBytes(32);
    const tag = 'after-restart';
    await tpm2(tpm.env, 'tpm2_quote', ['-c', '0x81010002', '-l', 'sha256:0', '-g', 'sha256', '-q', n2.toString('hex'), '-m', `${tag}.msg`, '-s', `${tag}.sig`, '-o', `${tag}.pcrs`, '-F', 'values'], work);
    const q2 = { quote: await readFile(join(work, `${tag}.msg`)), signature: await readFile(join(work, `${tag}.sig`)), pcrs: { sha256: { 0: await readFile(join(work, `${tag}.pcrs`)) } } };
    const v2 = verifyQuote({ akPublic: akRsa, ...q2, expectedExtraData: n2, requiredSelection: { bank: 'sha256', indices: [0] }, previous: prev });
    expect(v2.failures).toEqual([]);
    expect(v2.parsed.clockInfo.resetCount).toBeGreaterThan(prev.resetCount);
    const replay = verifyQuote({ akPublic: akRsa, ...q1, expectedExtraData: n1, requiredSelection: { bank: 'sha256', indices: [0] }, previous: v2.parsed.counters });
    expect(replay.failures.map((f) => f.code)).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);

    // A power loss (no TPM2_Shutdown): the next quote says its clock is not safe.
    await tpm.restart({ orderly: false });
    const n3 = randomBytes(32);
    await tpm2(tpm.env, 'tpm2_quote', ['-c', '0x81010002', '-l', 'sha256:0', '-g', 'sha256', '-q', n3.toString('hex'), '-m', 'unsafe.msg', '-s', 'unsafe.sig', '-o', 'unsafe.pcrs', '-F', 'values'], work);
    const v3 = verifyQuote({
      akPublic: akRsa,
      quote: await readFile(join(work, 'unsafe.msg')),
      signature: await readFile(join(work, 'unsafe.sig')),
      pcrs: { sha256: { 0: await readFile(join(work, 'unsafe.pcrs')) } },
      expectedExtraData: n3,
      requiredSelection: { bank: 'sha256', indices: [0] },
      previous: v2.parsed.counters,
    });
    expect(v3.failures.map((f) => f.code)).toEqual(['ERR_QUOTE_NOT_SAFE']);
  });
});

describe('EK certificates from swtpm NV', () => {
  it('RSA and P-384 EK certificates chain to the local CA, not to the vendor anchors', async () => {
    await tpm2(tpm.env, 'tpm2_nvread', ['0x01c00002', '-o', 'ekcert-rsa.der'], work);
    await tpm2(tpm.env, 'tpm2_nvread', ['0x01c00016', '-o', 'ekcert-ecc.der'], work);
    const local = parseTrustAnchors(await Promise.all(tpm.localCaCerts.map(async (p) => ({ name: p, bytes: await readFile(p) }))));
    const now = new Date();
    for (const t of ['rsa', 'ecc']) {
      const r = await verifyEkCertificate({ ekCertDer: await readFile(join(work, `ekcert-${t}.der`)), anchors: local, ekPublic: await readFile(join(work, `ek-${t}.pub`)), now });
      expect(r.issuer).toBe('CN=swtpm-localca');
    }
    const vendors = await loadTrustAnchors(join(process.cwd(), 'attestation/ek-ca'));
    await expect(verifyEkCertificate({ ekCertDer: await readFile(join(work, 'ekcert-rsa.der')), anchors: vendors, ekPublic: await readFile(join(work, 'ek-rsa.pub')), now })).rejects.toMatchObject({ code: 'ERR_EK_CERT_CHAIN' });
  });
});
