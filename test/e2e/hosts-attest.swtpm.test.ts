import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { importSPKI, jwtVerify, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTpm2bPublic, tpmPublicToKeyObject } from '../../src/attestation/tpm2/public.js';
import { TpmDriver, type AkObject, type EkObject } from '../../src/cli/agent/tpm.js';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../src/hsm/pkcs11/pkcs11-key-store.js';
import { ManualClock } from '../../src/lib/clock.js';
import { startSoftHsm, type SoftHsm } from '../helpers/softhsm.js';
import { startSwtpm, type Swtpm } from '../helpers/swtpm.js';
import { attestationPolicyLines, makeRigDir } from '../helpers/rig.js';
import { startTestService, type TestService } from '../helpers/service.js';

/**
 * 01-enroll, 02-attest, 03-negative cases, against a real swtpm driven by tpm2-tools and a real
 * SoftHSM2 token, through the HTTP API.
 */
let tpm: Swtpm;
let hsm: SoftHsm;
let ks: Pkcs11KeyStore;
let svc: TestService;
let drv: TpmDriver;
const clock = new ManualClock(Date.now());
const PCRS = 'sha256:0,1,2,3,4,5,6,7';
const b64 = (b: Buffer) => b.toString('base64');

let ekRsa: EkObject;
let ekEcc: EkObject;
let fleetToken = '';
let ak1: AkObject;
let ak2: AkObject;
let host1 = '';
let host2 = '';
let pcr7 = '';

function ekSpkiHash(ek: EkObject): string {
  return createHash('sha256').update(tpmPublicToKeyObject(parseTpm2bPublic(ek.public)).export({ format: 'der', type: 'spki' })).digest('hex');
}

beforeAll(async () => {
  tpm = await startSwtpm();
  hsm = await startSoftHsm();
  ks = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
  drv = await TpmDriver.open({ tcti: tpm.tcti });
  ekRsa = await drv.createEk('rsa');
  ekEcc = await drv.createEk('ecc384');
  pcr7 = (await drv.pcrRead('sha256:7')).sha256!['7']!;

  const rig = makeRigDir(tpm, {
    'attestation/swtpm.yaml': attestationPolicyLines('swtpm-hosts', ['role', 'e2e'], { '7': pcr7 }, ['nonceTtl: PT60S']),
    'attestation/no-cert.yaml': [
      'id: no-cert-hosts', 'version: 1', 'hosts:', '  labels:', '    role: vtpm-without-cert',
      'enrollment:', '  requireEkCertificate: false', `  ekAllowlist: ["${ekSpkiHash(ekEcc)}"]`,
      'pcrs:', '  bank: sha256', '  indices: [0, 1, 2, 3, 4, 5, 6, 7]',
    ],
  }, 'custos-e2e-');
  svc = await startTestService({ hsm: ks, clock, env: rig.env });
});

afterAll(async () => {
  await drv?.close();
  await svc?.close();
  await tpm?.stop();
  await hsm?.cleanup();
});

async function provisioningToken(labels: Record<string, string>, uses = 1): Promise<string> {
  const r = await svc.call('POST', '/v1/provisioning-tokens', { ttlSeconds: 600, uses, labels }, svc.tokens.operator);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.token;
}

async function enrollAndActivate(ek: EkObject, ak: AkObject, cert: Buffer | undefined, labels: Record<string, string>, token?: string): Promise<string> {
  token ??= await provisioningToken(labels);
  const e = await svc.call('POST', '/v1/hosts/enroll', {
    ...(cert ? { ekCertificate: b64(cert) } : {}), ekPublic: b64(ek.public), akPublic: b64(ak.public), provisioningToken: token,
  }, null);
  expect(e.status, JSON.stringify(e.body)).toBe(201);
  const secret = await drv.activateCredential(ek, ak, Buffer.from(e.body.credentialBlob, 'base64'), Buffer.from(e.body.encryptedSecret, 'base64'));
  const a = await svc.call('POST', `/v1/hosts/enroll/${e.body.enrollmentId}/activate`, { secret: b64(secret) }, null);
  expect(a.status, JSON.stringify(a.body)).toBe(201);
  expect(a.body.akName).toBe(ak.name.toString('hex'));
  return a.body.hostId;
}

async function quoteFor(hostId: string, ak: AkObject, extra?: (nonce: Buffer) => Buffer) {
  const c = await svc.call('POST', '/v1/challenges', { hostId }, null);
  expect(c.status, JSON.stringify(c.body)).toBe(200);
  const nonce = Buffer.from(c.body.nonce, 'base64');
  expect(nonce).toHaveLength(32);
  const q = await drv.quote(ak, PCRS, extra ? extra(nonce) : nonce);
  return { nonce: c.body.nonce as string, quote: b64(q.quote), signature: b64(q.signature), pcrs: q.pcrs };
}

describe('01 enroll', () => {
  it('enrolls a host with an RSA EK certificate from NV and an ECC AK, pinning the AK by credential activation', async () => {
    const certs = await drv.readEkCertificates();
    expect(certs.rsa).toBeDefined();
    ak1 = await drv.createAk(ekRsa, 'ecc');
    host1 = await enrollAndActivate(ekRsa, ak1, certs.rsa, { role: 'e2e' });
    const h = await svc.call('GET', `/v1/hosts/${host1}`, undefined, svc.tokens.auditor);
    expect(h.body).toMatchObject({ hostId: host1, status: 'active', akName: ak1.name.toString('hex'), policyId: 'swtpm-hosts' });
    expect(h.body.ekCertificateIssuer).toContain('swtpm-localca');
  });

  it('enrolls a second host with the P-384 EK certificate and an RSA AK', async () => {
    const certs = await drv.readEkCertificates();
    ak2 = await drv.createAk(ekEcc, 'rsa');
    // A fleet's token, good for several hosts.
    fleetToken = await provisioningToken({ role: 'e2e' }, 3);
    host2 = await enrollAndActivate(ekEcc, ak2, certs.ecc384, { role: 'e2e' }, fleetToken);
    expect(host2).not.toBe(host1);
  });

  it('refuses an EK certificate whose key is not the EK sent', async () => {
    const certs = await drv.readEkCertificates();
    const ak = await drv.createAk(ekEcc, 'ecc');
    const r = await svc.call('POST', '/v1/hosts/enroll', { ekCertificate: b64(certs.rsa!), ekPublic: b64(ekEcc.public), akPublic: b64(ak.public), provisioningToken: await provisioningToken({ role: 'e2e' }) }, null);
    expect(r.body.error.code).toBe('ERR_EK_MISMATCH');
  });

  it('refuses enrollment without a provisioning token or API token, and with a used-up token', async () => {
    const certs = await drv.readEkCertificates();
    const ak = await drv.createAk(ekRsa, 'ecc');
    const body = { ekCertificate: b64(certs.rsa!), ekPublic: b64(ekRsa.public), akPublic: b64(ak.public) };
    expect((await svc.call('POST', '/v1/hosts/enroll', body, null)).status).toBe(401);
    const token = await provisioningToken({ role: 'e2e' });
    expect((await svc.call('POST', '/v1/hosts/enroll', { ...body, provisioningToken: token }, null)).status).toBe(201);
    const again = await svc.call('POST', '/v1/hosts/enroll', { ...body, provisioningToken: token }, null);
    expect(again.body.error.code).toBe('ERR_PROVISIONING_TOKEN');
    expect((await svc.call('POST', '/v1/hosts/enroll', { ...body, provisioningToken: 'cpt_' + 'x'.repeat(43) }, null)).body.error.code).toBe('ERR_PROVISIONING_TOKEN');
    // the auditor role may not enroll; the provisioner may
    expect((await svc.call('POST', '/v1/hosts/enroll', body, svc.tokens.auditor)).status).toBe(403);
  });

  it('activation with a wrong secret fails and burns the enrollment; activating twice fails', async () => {
    const certs = await drv.readEkCertificates();
    const ak = await drv.createAk(ekRsa, 'ecc');
    const e = await svc.call('POST', '/v1/hosts/enroll', { ekCertificate: b64(certs.rsa!), ekPublic: b64(ekRsa.public), akPublic: b64(ak.public), labels: { role: 'e2e' } }, svc.tokens.provisioner);
    expect(e.status).toBe(201);
    const wrong = await svc.call('POST', `/v1/hosts/enroll/${e.body.enrollmentId}/activate`, { secret: b64(Buffer.alloc(32, 7)) }, null);
    expect(wrong.status).toBe(403);
    expect(wrong.body.error.code).toBe('ERR_ACTIVATION_FAILED');
    const secret = await drv.activateCredential(ekRsa, ak, Buffer.from(e.body.credentialBlob, 'base64'), Buffer.from(e.body.encryptedSecret, 'base64'));
    const late = await svc.call('POST', `/v1/hosts/enroll/${e.body.enrollmentId}/activate`, { secret: b64(secret) }, null);
    expect(late.body.error.code).toBe('ERR_ENROLLMENT_USED');
    expect((await svc.call('POST', '/v1/hosts/enroll/nope/activate', { secret: b64(secret) }, null)).body.error.code).toBe('ERR_ENROLLMENT_NOT_FOUND');
  });

  it('a credential made for one AK does not activate for another (the TPM checks the Name)', async () => {
    const certs = await drv.readEkCertificates();
    const akA = await drv.createAk(ekRsa, 'ecc');
    const akB = await drv.createAk(ekRsa, 'ecc');
    const e = await svc.call('POST', '/v1/hosts/enroll', { ekCertificate: b64(certs.rsa!), ekPublic: b64(ekRsa.public), akPublic: b64(akA.public), labels: { role: 'e2e' } }, svc.tokens.provisioner);
    await expect(drv.activateCredential(ekRsa, akB, Buffer.from(e.body.credentialBlob, 'base64'), Buffer.from(e.body.encryptedSecret, 'base64'))).rejects.toThrow();
  });

  it('a TPM without an EK certificate enrolls only with a provisioning token and an allowlisted EK', async () => {
    const ak = await drv.createAk(ekEcc, 'ecc');
    const noToken = await svc.call('POST', '/v1/hosts/enroll', { ekPublic: b64(ekEcc.public), akPublic: b64(ak.public), labels: { role: 'vtpm-without-cert' } }, svc.tokens.provisioner);
    expect(noToken.body.error.code).toBe('ERR_PROVISIONING_TOKEN');
    const notListed = await svc.call('POST', '/v1/hosts/enroll', { ekPublic: b64(ekRsa.public), akPublic: b64(ak.public), provisioningToken: await provisioningToken({ role: 'vtpm-without-cert' }) }, null);
    expect(notListed.body.error.code).toBe('ERR_EK_NOT_ALLOWED');
    const certRequired = await svc.call('POST', '/v1/hosts/enroll', { ekPublic: b64(ekEcc.public), akPublic: b64(ak.public), provisioningToken: await provisioningToken({ role: 'e2e' }) }, null);
    expect(certRequired.body.error.code).toBe('ERR_EK_NOT_ALLOWED');
    const noPolicy = await svc.call('POST', '/v1/hosts/enroll', { ekPublic: b64(ekEcc.public), akPublic: b64(ak.public), provisioningToken: await provisioningToken({ role: 'unknown' }) }, null);
    expect(noPolicy.body.error.code).toBe('ERR_POLICY_NOT_FOUND');
    const ok = await svc.call('POST', '/v1/hosts/enroll', { ekPublic: b64(ekEcc.public), akPublic: b64(ak.public), provisioningToken: await provisioningToken({ role: 'vtpm-without-cert' }) }, null);
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    expect(ok.body.policyId).toBe('no-cert-hosts');
  });
});

describe('02 attest', () => {
  it('an honest quote is affirming, with an EAR result signed in the HSM', async () => {
    for (const [hostId, ak] of [[host1, ak1], [host2, ak2]] as const) {
      const ev = await quoteFor(hostId, ak);
      const r = await svc.call('POST', `/v1/hosts/${hostId}/attest`, ev, null);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.status).toBe('affirming');
      expect(r.body.failures).toEqual([]);
      const kid = decodeProtectedHeader(r.body.result).kid!;
      const [name, v] = kid.split('.v');
      const pub = await svc.call('GET', `/v1/keys/${name}/versions/${v}/public`);
      const { payload } = await jwtVerify(r.body.result, await importSPKI(pub.body.pem, 'ES256'));
      expect(payload.eat_nonce).toBe(Buffer.from(ev.nonce, 'base64').toString('base64url'));
      expect((payload.submods as Record<string, Record<string, unknown>>)[hostId]!['ear.status']).toBe('affirming');
    }
    const h = await svc.call('GET', `/v1/hosts/${host1}`, undefined, svc.tokens.auditor);
    expect(h.body.lastAttestation).toMatchObject({ status: 'affirming', policyId: 'swtpm-hosts', policyVersion: 1 });
  });

  it('a replayed nonce is refused', async () => {
    const ev = await quoteFor(host1, ak1);
    expect((await svc.call('POST', `/v1/hosts/${host1}/attest`, ev, null)).body.status).toBe('affirming');
    const again = await svc.call('POST', `/v1/hosts/${host1}/attest`, ev, null);
    expect(again.status).toBe(403);
    expect(again.body.error.code).toBe('ERR_NONCE_UNKNOWN');
  });

  /**
   * Evidence the host's AK did not make for this nonce is refused as a request: a 403 naming only
   * the failed authenticity checks (no PCR detail), no signed result, the host's record untouched,
   * and a `host.attest` refusal in the audit log.
   */
  async function expectRefusedUntouched(ev: Record<string, unknown>, codes: string[]): Promise<void> {
    const before = (await svc.call('GET', `/v1/hosts/${host1}`)).body;
    const r = await svc.call('POST', `/v1/hosts/${host1}/attest`, ev, null);
    expect([r.status, r.body.error?.code, r.body.result]).toEqual([403, codes[0], undefined]);
    expect(r.body.error.details.failures.map((f: { code: string }) => f.code)).toEqual(codes);
    expect(JSON.stringify(r.body)).not.toMatch(/PCR|pcr/);
    expect((await svc.call('GET', `/v1/hosts/${host1}`)).body).toEqual(before);
    const last = (await svc.store.listAudit((await svc.store.lastAudit())!.seq - 1, 1))[0]!;
    expect([last.action, last.subject, last.outcome, last.details['code']]).toEqual(['host.attest', host1, 'denied', codes[0]]);
  }

  it('a quote over another nonce is refused with ERR_QUOTE_NONCE_MISMATCH, recording nothing on the host, and the nonce is spent', async () => {
    const ev = await quoteFor(host1, ak1, () => Buffer.alloc(32, 1));
    await expectRefusedUntouched(ev, ['ERR_QUOTE_NONCE_MISMATCH']);
    expect((await svc.call('POST', `/v1/hosts/${host1}/attest`, ev, null)).body.error.code).toBe('ERR_NONCE_UNKNOWN');
  });

  it("another host's nonce is refused", async () => {
    const c = await svc.call('POST', '/v1/challenges', { hostId: host2 }, null);
    const q = await drv.quote(ak1, PCRS, Buffer.from(c.body.nonce, 'base64'));
    const r = await svc.call('POST', `/v1/hosts/${host1}/attest`, { nonce: c.body.nonce, quote: b64(q.quote), signature: b64(q.signature), pcrs: q.pcrs }, null);
    expect(r.body.error.code).toBe('ERR_NONCE_UNKNOWN');
  });

  it('a quote signed by a different AK is refused with the signature and signer checks, recording nothing on the host', async () => {
    await expectRefusedUntouched(await quoteFor(host1, ak2), ['ERR_QUOTE_SIGNATURE', 'ERR_QUOTE_SIGNER']);
  });

  it('tampered quote bytes are refused; PCR values that do not match the digest are contraindicated', async () => {
    const ev = await quoteFor(host1, ak1);
    const quote = Buffer.from(ev.quote, 'base64');
    quote[quote.length - 1]! ^= 0x01;
    await expectRefusedUntouched({ ...ev, quote: b64(quote) }, ['ERR_QUOTE_SIGNATURE']);

    const ev2 = await quoteFor(host1, ak1);
    const pcrs = { sha256: { ...ev2.pcrs.sha256, '3': 'ab'.repeat(32) } };
    const r2 = await svc.call('POST', `/v1/hosts/${host1}/attest`, { ...ev2, pcrs }, null);
    expect(r2.body.failures.map((f: { code: string }) => f.code)).toContain('ERR_QUOTE_PCR_DIGEST');
  });

  it('a selection missing an index is contraindicated with ERR_QUOTE_PCR_SELECTION', async () => {
    const c = await svc.call('POST', '/v1/challenges', { hostId: host1 }, null);
    const q = await drv.quote(ak1, 'sha256:0,1,2,3,4,5,6', Buffer.from(c.body.nonce, 'base64'));
    const r = await svc.call('POST', `/v1/hosts/${host1}/attest`, { nonce: c.body.nonce, quote: b64(q.quote), signature: b64(q.signature), pcrs: q.pcrs }, null);
    expect(r.body.failures.map((f: { code: string }) => f.code)).toContain('ERR_QUOTE_PCR_SELECTION');
  });

  it('an expired nonce is refused', async () => {
    const ev = await quoteFor(host1, ak1);
    clock.advance(61_000);
    const r = await svc.call('POST', `/v1/hosts/${host1}/attest`, ev, null);
    expect(r.body.error.code).toBe('ERR_NONCE_EXPIRED');
  });

  it('malformed evidence is a 400 with a typed code, never a 500', async () => {
    const ev = await quoteFor(host1, ak1);
    const r = await svc.call('POST', `/v1/hosts/${host1}/attest`, { ...ev, quote: b64(Buffer.from('ff544347', 'hex')) }, null);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('ERR_TPM_MARSHAL');
    const extra = await svc.call('POST', `/v1/hosts/${host1}/attest`, { ...ev, colour: 'red' }, null);
    expect(extra.body.error.code).toBe('ERR_BAD_REQUEST');
  });

  it('the firmware version of the last good quote is kept; a TPM whose firmware went back is contraindicated', async () => {
    expect((await svc.call('POST', `/v1/hosts/${host1}/attest`, await quoteFor(host1, ak1), null)).body.status).toBe('affirming');
    const h = (await svc.store.getHost(host1))!;
    expect(h.lastClock!.firmwareVersion).toMatch(/^[0-9]+$/);
    // As if an earlier quote had come from newer firmware: this TPM's is now older, rolled back.
    const newer = (BigInt(h.lastClock!.firmwareVersion!) + 1n).toString();
    await svc.store.tx((t) => t.updateHost(host1, { lastClock: { ...h.lastClock!, firmwareVersion: newer } }));
    const r = await svc.call('POST', `/v1/hosts/${host1}/attest`, await quoteFor(host1, ak1), null);
    expect(r.body.status).toBe('contraindicated');
    expect(r.body.failures).toEqual([expect.objectContaining({ code: 'ERR_QUOTE_CLOCK_ROLLBACK', detail: expect.stringMatching(/firmware rolled back/) })]);
    await svc.store.tx((t) => t.updateHost(host1, { lastClock: h.lastClock }));
  });

  it('a TPM reset (resetCount goes up) still attests; a changed PCR is contraindicated naming the PCR', async () => {
    await drv.close();
    await tpm.restart();
    drv = await TpmDriver.open({ tcti: tpm.tcti });
    // the AKs' saved contexts died with the reset: load them again from their public/private parts
    const ek = await drv.createEk('rsa');
    expect(ek.name.equals(ekRsa.name)).toBe(true);
    ak1 = await drv.createAk(ek, 'ecc');
    host1 = await enrollAndActivate(ek, ak1, (await drv.readEkCertificates()).rsa, { role: 'e2e' });
    expect((await svc.call('POST', `/v1/hosts/${host1}/attest`, await quoteFor(host1, ak1), null)).body.status).toBe('affirming');

    await drv.pcrExtend(7, Buffer.from('unexpected boot component'));
    const r = await svc.call('POST', `/v1/hosts/${host1}/attest`, await quoteFor(host1, ak1), null);
    expect(r.body.status).toBe('contraindicated');
    const pf = r.body.failures.find((f: { code: string }) => f.code === 'ERR_QUOTE_PCR_POLICY');
    expect(pf.detail).toMatch(/7/);
  });
});

describe('03 revoke and audit', () => {
  it('a revoked host can no longer attest, nor enroll again with the same TPM', async () => {
    // An enrollment of the same EK, pending when the host is revoked.
    const ek = await drv.createEk('ecc384');
    const pendingAk = await drv.createAk(ek, 'ecc');
    const pending = await svc.call('POST', '/v1/hosts/enroll', { ekCertificate: b64((await drv.readEkCertificates()).ecc384!), ekPublic: b64(ek.public), akPublic: b64(pendingAk.public), labels: { role: 'e2e' } }, svc.tokens.provisioner);
    expect(pending.status, JSON.stringify(pending.body)).toBe(201);
    const r = await svc.call('POST', `/v1/hosts/${host2}/revoke`, { reason: 'decommissioned', revokeProvisioningToken: true }, svc.tokens.operator);
    expect(r.body.status).toBe('revoked');
    // The fleet token it enrolled with had uses left: they are gone, for another EK of this TPM as for anyone.
    expect([typeof r.body.provisioningTokenId, r.body.provisioningTokenRevoked]).toEqual(['string', true]);
    const rsaEk = await drv.createEk('rsa');
    const otherAk = await drv.createAk(rsaEk, 'ecc');
    const viaFleet = await svc.call('POST', '/v1/hosts/enroll', { ekCertificate: b64((await drv.readEkCertificates()).rsa!), ekPublic: b64(rsaEk.public), akPublic: b64(otherAk.public), provisioningToken: fleetToken }, null);
    expect(viaFleet.body.error.code).toBe('ERR_PROVISIONING_TOKEN');
    // The pending enrollment proves its credential, and still does not bring the TPM back.
    const secret = await drv.activateCredential(ek, pendingAk, Buffer.from(pending.body.credentialBlob, 'base64'), Buffer.from(pending.body.encryptedSecret, 'base64'));
    const late = await svc.call('POST', `/v1/hosts/enroll/${pending.body.enrollmentId}/activate`, { secret: b64(secret) }, null);
    expect([late.status, late.body.error?.code]).toEqual([403, 'ERR_HOST_REVOKED']);
    expect((await svc.call('POST', '/v1/challenges', { hostId: host2 }, null)).body.error.code).toBe('ERR_HOST_REVOKED');
    const ak = await drv.createAk(await drv.createEk('ecc384'), 'rsa');
    const again = await svc.call('POST', '/v1/hosts/enroll', { ekCertificate: b64((await drv.readEkCertificates()).ecc384!), ekPublic: b64(ekEcc.public), akPublic: b64(ak.public), labels: { role: 'e2e' } }, svc.tokens.provisioner);
    expect(again.body.error.code).toBe('ERR_HOST_REVOKED');
  });

  it('every decision is in the audit log with evidence hashes and no secrets', async () => {
    const events = await svc.store.listAudit(0, 10_000);
    const byAction = (a: string) => events.filter((e) => e.action === a);
    expect(byAction('host.enroll').some((e) => e.outcome === 'success')).toBe(true);
    expect(byAction('host.enroll').some((e) => e.outcome === 'denied' && e.details.code === 'ERR_EK_MISMATCH')).toBe(true);
    expect(byAction('host.activate').some((e) => e.outcome === 'denied' && e.details.code === 'ERR_ACTIVATION_FAILED')).toBe(true);
    const attests = byAction('host.attest');
    expect(attests.some((e) => e.outcome === 'success' && typeof e.details.evidenceSha256 === 'string' && e.details.policyId === 'swtpm-hosts')).toBe(true);
    expect(attests.some((e) => e.outcome === 'failure' && (e.details.failures as string[]).includes('ERR_QUOTE_PCR_DIGEST'))).toBe(true);
    expect(attests.some((e) => e.outcome === 'denied' && e.details.code === 'ERR_QUOTE_NONCE_MISMATCH' && typeof e.details.evidenceSha256 === 'string')).toBe(true);
    expect(attests.some((e) => e.outcome === 'denied' && e.details.code === 'ERR_NONCE_UNKNOWN')).toBe(true);
    expect(byAction('host.revoke')).toHaveLength(1);
    const text = JSON.stringify(events);
    expect(text).not.toMatch(/cpt_[A-Za-z0-9_-]{43}/);
    expect(readdirSync(svc.dir).length).toBeGreaterThan(0);
  });
});
