import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAkPublic } from '../../../src/attestation/ak.js';
import { makeCredential } from '../../../src/attestation/make-credential.js';
import { akQualifiedNameUnderEk } from '../../../src/attestation/qualified-name.js';
import { verifyQuote, type PcrValues } from '../../../src/attestation/quote.js';
import { parseTpm2bPublic, tpmPublicEqualsKey } from '../../../src/attestation/tpm2/public.js';
import { TpmDriver, type AkObject, type EkObject } from '../../../src/cli/agent/tpm.js';
import type { PcrHexValues } from '../../../src/cli/agent/pcr.js';
import { startSwtpm, type Swtpm } from '../../helpers/swtpm.js';
import { tpm2Raw } from '../../helpers/tpm2-tools.js';

let tpm: Swtpm;
let driver: TpmDriver;
let ekRsa: EkObject;
let ekEcc: EkObject;
let akRsa: AkObject;
let akEcc: AkObject;

const PCRS = 'sha256:0,1,2,3,4,5,6,7';

function toBuffers(pcrs: PcrHexValues): PcrValues {
  return Object.fromEntries(Object.entries(pcrs).map(([bank, v]) => [bank, Object.fromEntries(Object.entries(v).map(([i, h]) => [i, Buffer.from(h, 'hex')]))]));
}

function verify(ak: AkObject, ek: EkObject, q: { quote: Buffer; signature: Buffer; pcrs: PcrHexValues }, extraData: Buffer) {
  return verifyQuote({
    akPublic: checkAkPublic(ak.public),
    quote: q.quote,
    signature: q.signature,
    pcrs: toBuffers(q.pcrs),
    expectedExtraData: extraData,
    requiredSelection: { bank: 'sha256', indices: [0, 1, 2, 3, 4, 5, 6, 7] },
    expectedQualifiedSigner: akQualifiedNameUnderEk(ek.name, ak.name),
  });
}

beforeAll(async () => {
  tpm = await startSwtpm();
  driver = await TpmDriver.open({ tcti: tpm.tcti });
  ekRsa = await driver.createEk('rsa');
  ekEcc = await driver.createEk('ecc384');
  akRsa = await driver.createAk(ekRsa, 'rsa');
  akEcc = await driver.createAk(ekEcc, 'ecc');
});

afterAll(async () => {
  await driver?.close();
  await tpm?.stop();
});

describe('TpmDriver on swtpm', () => {
  it('works in a private 0700 folder that close() removes', async () => {
    const d = await TpmDriver.open({ tcti: tpm.tcti });
    expect(statSync(d.workDir).mode & 0o777).toBe(0o700);
    await d.close();
    expect(existsSync(d.workDir)).toBe(false);
    await expect(d.readEkCertificates()).rejects.toMatchObject({ code: 'ERR_TPM_UNAVAILABLE' });
  });

  it('reads both EK certificates from NV without padding, each certifying its EK', async () => {
    const certs = await driver.readEkCertificates();
    expect(certs.rsa).toBeDefined();
    expect(certs.ecc384).toBeDefined();
    const rsa = new X509Certificate(certs.rsa!);
    const ecc = new X509Certificate(certs.ecc384!);
    // The DER re-encodes to exactly the bytes returned: nothing trailing.
    expect(rsa.raw.equals(certs.rsa!)).toBe(true);
    expect(ecc.raw.equals(certs.ecc384!)).toBe(true);
    expect(tpmPublicEqualsKey(parseTpm2bPublic(ekRsa.public), rsa.publicKey)).toBe(true);
    expect(tpmPublicEqualsKey(parseTpm2bPublic(ekEcc.public), ecc.publicKey)).toBe(true);
    expect(tpmPublicEqualsKey(parseTpm2bPublic(ekRsa.public), ecc.publicKey)).toBe(false);
  });

  it('creates an RSA-2048 EK and a P-384 EK', () => {
    const rsa = parseTpm2bPublic(ekRsa.public);
    const ecc = parseTpm2bPublic(ekEcc.public);
    expect(rsa.type).toBe('rsa');
    expect(rsa.type === 'rsa' && rsa.keyBits).toBe(2048);
    expect(ecc.type === 'ecc' && ecc.curve.jwkCrv).toBe('P-384');
    // Policy-only RSA EK vs. the high-range P-384 EK with userWithAuth.
    expect(rsa.objectAttributes.userWithAuth).toBe(false);
    expect(ecc.objectAttributes.userWithAuth).toBe(true);
  });

  it('creates restricted signing AKs (RSA and ECC) that pass the server-side AK checks', () => {
    const rsa = checkAkPublic(akRsa.public);
    const ecc = checkAkPublic(akEcc.public);
    expect(rsa.name).toEqual(akRsa.name);
    expect(ecc.name).toEqual(akEcc.name);
    expect(rsa.public.type).toBe('rsa');
    expect(ecc.public.type === 'ecc' && ecc.public.curve.jwkCrv).toBe('P-256');
  });

  for (const which of ['rsa', 'ecc384'] as const) {
    it(`activates a credential made by makeCredential for the ${which} EK`, async () => {
      const ek = which === 'rsa' ? ekRsa : ekEcc;
      const ak = which === 'rsa' ? akRsa : akEcc;
      const secret = randomBytes(32);
      const made = makeCredential(ek.public, ak.name, secret);
      expect(await driver.activateCredential(ek, ak, made.credentialBlob, made.encryptedSecret)).toEqual(secret);
    });

    it(`refuses a credential bound to another AK Name (${which} EK)`, async () => {
      const ek = which === 'rsa' ? ekRsa : ekEcc;
      const other = which === 'rsa' ? akEcc : akRsa;
      const made = makeCredential(ek.public, other.name, randomBytes(16));
      await expect(driver.activateCredential(ek, which === 'rsa' ? akRsa : akEcc, made.credentialBlob, made.encryptedSecret)).rejects.toMatchObject({ code: 'ERR_TPM_COMMAND' });
    });
  }

  it('refuses a malformed credential blob before touching the TPM', async () => {
    await expect(driver.activateCredential(ekRsa, akRsa, Buffer.from([0, 5, 1]), Buffer.from([0, 1, 1]))).rejects.toMatchObject({ code: 'ERR_TPM_MARSHAL' });
  });

  for (const which of ['rsa', 'ecc'] as const) {
    it(`quotes with the ${which} AK; the quote verifies with the pure verifier and the values match pcrread`, async () => {
      const ak = which === 'rsa' ? akRsa : akEcc;
      const ek = which === 'rsa' ? ekRsa : ekEcc;
      const nonce = randomBytes(32);
      const q = await driver.quote(ak, PCRS, nonce);
      expect(q.quote.subarray(0, 6).toString('hex')).toBe('ff5443478018');
      const verdict = verify(ak, ek, q, nonce);
      expect(verdict.failures).toEqual([]);
      expect(verdict.ok).toBe(true);
      expect(Object.keys(q.pcrs.sha256!)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
      expect(q.pcrs).toEqual(await driver.pcrRead(PCRS));
      // Another nonce does not verify.
      expect(verify(ak, ek, q, randomBytes(32)).failures.map((f) => f.code)).toContain('ERR_QUOTE_NONCE_MISMATCH');
    });
  }

  it('splits multi-bank PCR values in selection order', async () => {
    await driver.pcrExtend(3, Buffer.from('multi-bank'), ['sha1', 'sha256']);
    const q = await driver.quote(akEcc, 'sha256:3,7+sha1:0,3', Buffer.alloc(0));
    expect(Object.keys(q.pcrs)).toEqual(['sha256', 'sha1']);
    expect(q.pcrs.sha1!['3']).toHaveLength(40);
    expect(q.pcrs.sha256!['3']).toHaveLength(64);
    expect(q.pcrs).toEqual(await driver.pcrRead('sha256:3,7+sha1:0,3'));
  });

  it('extends a PCR: new = SHA-256(old ‖ SHA-256(data))', async () => {
    const before = Buffer.from((await driver.pcrRead('sha256:9')).sha256!['9']!, 'hex');
    const digests = await driver.pcrExtend(9, Buffer.from('custos demo'));
    const d = createHash('sha256').update('custos demo').digest();
    expect(digests.sha256).toBe(d.toString('hex'));
    const after = (await driver.pcrRead('sha256:9')).sha256!['9'];
    expect(after).toBe(createHash('sha256').update(before).update(d).digest('hex'));
  });

  it('rejects bad arguments before running a tool', async () => {
    await expect(driver.quote(akRsa, PCRS, Buffer.alloc(65))).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(driver.quote(akRsa, 'sha256:24', Buffer.alloc(1))).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(driver.pcrExtend(24, Buffer.from('x'))).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(driver.persistAk(akRsa, 0x80000001)).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
  });

  it('persists the AK; a fresh driver quotes with the handle, also after a TPM reset', async () => {
    const handle = 0x81010042;
    await driver.persistAk(akRsa, handle);
    // Persisting again at the same handle replaces the object.
    await driver.persistAk(akEcc, handle);
    expect((await driver.persistentHandles()).filter((h) => h === handle)).toHaveLength(1);
    await driver.close();
    await tpm.restart();
    driver = await TpmDriver.open({ tcti: tpm.tcti });
    const pub = await driver.readPublic(handle);
    expect(pub.public).toEqual(akEcc.public);
    expect(pub.name).toEqual(akEcc.name);
    const nonce = randomBytes(32);
    const q = await driver.quote(handle, PCRS, nonce);
    expect(verify(akEcc, ekEcc, q, nonce).ok).toBe(true);
    await driver.evict(handle);
    await expect(driver.readPublic(handle)).rejects.toMatchObject({ code: 'ERR_TPM_COMMAND' });
  });

  it('leaves no transient object or session loaded after its steps', async () => {
    const ek = await driver.createEk('ecc384');
    const ak = await driver.createAk(ek, 'ecc');
    const made = makeCredential(ek.public, ak.name, randomBytes(16));
    await driver.activateCredential(ek, ak, made.credentialBlob, made.encryptedSecret);
    await driver.quote(ak, PCRS, randomBytes(8));
    const wrong = makeCredential(ek.public, akRsa.name, randomBytes(16));
    await expect(driver.activateCredential(ek, ak, wrong.credentialBlob, wrong.encryptedSecret)).rejects.toMatchObject({ code: 'ERR_TPM_COMMAND' });
    const transient = await tpm2Raw(tpm.env, 'tpm2_getcap', ['handles-transient']);
    const sessions = await tpm2Raw(tpm.env, 'tpm2_getcap', ['handles-loaded-session']);
    expect(transient.stdout.trim()).toBe('');
    expect(sessions.stdout.trim()).toBe('');
  });

  it('uses owner and endorsement passwords from files when the hierarchies have them', async () => {
    const pw = await TpmDriver.open({ tcti: tpm.tcti });
    const ownerFile = join(pw.workDir, 'owner.pw');
    const endorsementFile = join(pw.workDir, 'endorsement.pw');
    await writeFile(ownerFile, 'owner-secret', { mode: 0o600 });
    await writeFile(endorsementFile, 'endorsement-secret', { mode: 0o600 });
    await tpm2Raw(tpm.env, 'tpm2_changeauth', ['-c', 'o', `file:${ownerFile}`]);
    await tpm2Raw(tpm.env, 'tpm2_changeauth', ['-c', 'e', `file:${endorsementFile}`]);
    const withAuth = await TpmDriver.open({ tcti: tpm.tcti, ownerAuthFile: ownerFile, endorsementAuthFile: endorsementFile });
    try {
      // Without the passwords the hierarchy refuses.
      await expect(pw.createEk('ecc384')).rejects.toMatchObject({ code: 'ERR_TPM_COMMAND' });
      const ek = await withAuth.createEk('rsa');
      const ak = await withAuth.createAk(ek, 'ecc');
      const secret = randomBytes(24);
      const made = makeCredential(ek.public, ak.name, secret);
      expect(await withAuth.activateCredential(ek, ak, made.credentialBlob, made.encryptedSecret)).toEqual(secret);
      await expect(pw.persistAk(ak, 0x81010043)).rejects.toMatchObject({ code: 'ERR_TPM_COMMAND' });
      await withAuth.persistAk(ak, 0x81010043);
      expect((await withAuth.readPublic(0x81010043)).name).toEqual(ak.name);
      await withAuth.evict(0x81010043);
    } finally {
      await tpm2Raw(tpm.env, 'tpm2_changeauth', ['-c', 'o', '-p', `file:${ownerFile}`]);
      await tpm2Raw(tpm.env, 'tpm2_changeauth', ['-c', 'e', '-p', `file:${endorsementFile}`]);
      await withAuth.close();
      await pw.close();
    }
  });

  it('reports an unreachable TPM as ERR_TPM_UNAVAILABLE', async () => {
    const d = await TpmDriver.open({ tcti: 'swtpm:host=127.0.0.1,port=1' });
    try {
      await expect(d.readEkCertificates()).rejects.toMatchObject({ code: 'ERR_TPM_UNAVAILABLE' });
    } finally {
      await d.close();
    }
  });
});
