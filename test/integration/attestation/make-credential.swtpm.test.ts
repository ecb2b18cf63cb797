import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCredential } from '../../../src/attestation/make-credential.js';
import { objectName, parseTpm2bPublic } from '../../../src/attestation/tpm2/public.js';
import { writeCredentialFile } from '../../../src/attestation/tpm2/credential.js';
import { startSwtpm, type Swtpm } from '../../helpers/swtpm.js';
import { activateCredential, tpm2, Tpm2ToolError } from '../../helpers/tpm2-tools.js';

let tpm: Swtpm;
let work: string;

beforeAll(async () => {
  tpm = await startSwtpm();
  work = await mkdtemp(join(tmpdir(), 'custos-mc-'));
  await tpm2(tpm.env, 'tpm2_createek', ['-c', 'ek-rsa.ctx', '-G', 'rsa', '-u', 'ek-rsa.pub'], work);
  await tpm2(tpm.env, 'tpm2_createek', ['-c', 'ek-ecc.ctx', '-G', 'ecc384', '-u', 'ek-ecc.pub'], work);
  await tpm2(tpm.env, 'tpm2_createak', ['-C', 'ek-rsa.ctx', '-c', 'ak-rsa.ctx', '-G', 'rsa', '-g', 'sha256', '-s', 'rsassa', '-u', 'ak-rsa.pub', '-n', 'ak-rsa.name'], work);
  await tpm2(tpm.env, 'tpm2_createak', ['-C', 'ek-ecc.ctx', '-c', 'ak-ecc.ctx', '-G', 'ecc', '-g', 'sha256', '-s', 'ecdsa', '-u', 'ak-ecc.pub', '-n', 'ak-ecc.name'], work);
  // The low-range P-256 EK (no certificate covers it, but MakeCredential must work for it too).
  await tpm2(tpm.env, 'tpm2_createek', ['-c', 'ek-p256.ctx', '-G', 'ecc', '-u', 'ek-p256.pub'], work);
  await tpm2(tpm.env, 'tpm2_createak', ['-C', 'ek-p256.ctx', '-c', 'ak-p256.ctx', '-G', 'ecc', '-g', 'sha256', '-s', 'ecdsa', '-u', 'ak-p256.pub', '-n', 'ak-p256.name'], work);
});

afterAll(async () => {
  await tpm?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function activate(ekType: 'rsa' | 'ecc', akCtx: string, made: { credentialBlob: Buffer; encryptedSecret: Buffer }): Promise<Buffer> {
  const file = `cred-${randomBytes(4).toString('hex')}.bin`;
  await writeFile(join(work, file), writeCredentialFile(made));
  const out = `${file}.out`;
  await activateCredential(tpm.env, work, { ekType, ekCtx: `ek-${ekType}.ctx`, akCtx, credentialFile: file, outFile: out });
  return readFile(join(work, out));
}

describe('makeCredential against tpm2_activatecredential on swtpm', () => {
  for (const ekType of ['rsa', 'ecc'] as const) {
    it(`${ekType} EK: the TPM recovers the secret`, async () => {
      const ek = parseTpm2bPublic(await readFile(join(work, `ek-${ekType}.pub`)));
      const akName = await readFile(join(work, `ak-${ekType}.name`));
      expect(objectName(parseTpm2bPublic(await readFile(join(work, `ak-${ekType}.pub`))))).toEqual(akName);
      const secret = randomBytes(32);
      const made = makeCredential(ek, akName, secret);
      expect(await activate(ekType, `ak-${ekType}.ctx`, made)).toEqual(secret);
    });

    it(`${ekType} EK: a credential bound to another Name fails activation`, async () => {
      const ekBytes = await readFile(join(work, `ek-${ekType}.pub`));
      const akName = Buffer.from(await readFile(join(work, `ak-${ekType}.name`)));
      akName[akName.length - 1]! ^= 1;
      const made = makeCredential(ekBytes, akName, randomBytes(16));
      await expect(activate(ekType, `ak-${ekType}.ctx`, made)).rejects.toBeInstanceOf(Tpm2ToolError);
    });
  }

  it('ECC P-256 EK (policy session): the TPM recovers the secret', async () => {
    const ek = parseTpm2bPublic(await readFile(join(work, 'ek-p256.pub')));
    expect(ek.type === 'ecc' && ek.curve.jwkCrv).toBe('P-256');
    const akName = await readFile(join(work, 'ak-p256.name'));
    const secret = randomBytes(32);
    const made = makeCredential(ek, akName, secret);
    const file = 'cred-p256.bin';
    await writeFile(join(work, file), writeCredentialFile(made));
    await activateCredential(tpm.env, work, { ekType: 'ecc', policySession: true, ekCtx: 'ek-p256.ctx', akCtx: 'ak-p256.ctx', credentialFile: file, outFile: 'p256.out' });
    expect(await readFile(join(work, 'p256.out'))).toEqual(secret);
  });

  it('RSA EK: a credential for the other AK fails activation with this AK', async () => {
    const ek = await readFile(join(work, 'ek-rsa.pub'));
    const otherName = objectName(parseTpm2bPublic(await readFile(join(work, 'ak-ecc.pub'))));
    const made = makeCredential(ek, otherName, randomBytes(16));
    await expect(activate('rsa', 'ak-rsa.ctx', made)).rejects.toBeInstanceOf(Tpm2ToolError);
  });
});
