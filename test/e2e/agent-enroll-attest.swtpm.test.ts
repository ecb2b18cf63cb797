/**
 * custos-agent end to end: the agent's commands (run in-process through runAgent, driving a real
 * swtpm with tpm2-tools) against a real custos server (SQLite, SoftHSM2) over HTTP — enroll,
 * attest, session, a changed PCR, a refused audience, host revocation.
 */
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createLocalJWKSet, decodeJwt, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent, type AgentIo } from '../../src/cli/agent/program.js';
import { loadState } from '../../src/cli/agent/state.js';
import { TpmDriver } from '../../src/cli/agent/tpm.js';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm, type SoftHsm } from '../helpers/softhsm.js';
import { startSwtpm, type Swtpm } from '../helpers/swtpm.js';
import { startTestService, type TestService } from '../helpers/service.js';

const AUDIENCE = 'urn:custos:audience:ledger';

let tpm: Swtpm;
let hsm: SoftHsm;
let ks: Pkcs11KeyStore;
let svc: TestService;
let dir: string;
let state: string;
let hostId = '';
let firstToken = '';

async function agent(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: AgentIo = { stdout: (t) => (out += t), stderr: (t) => (err += t), env: { HOME: dir } };
  const code = await runAgent(['node', 'custos-agent', '--url', svc.url, '--tcti', tpm.tcti, '--state', state, ...args], io);
  return { code, out, err };
}

async function provisioningTokenFile(name: string): Promise<string> {
  const r = await svc.call('POST', '/v1/provisioning-tokens', { ttlSeconds: 600, uses: 1, labels: { role: 'agent-e2e' } }, svc.tokens.operator);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const file = join(dir, name);
  writeFileSync(file, `${r.body.token}\n`, { mode: 0o600 });
  return file;
}

beforeAll(async () => {
  tpm = await startSwtpm();
  hsm = await startSoftHsm();
  ks = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
  dir = mkdtempSync(join(tmpdir(), 'custos-agent-e2e-'));
  state = join(dir, 'agent', 'state.json');

  const drv = await TpmDriver.open({ tcti: tpm.tcti });
  const pcrs = await drv.pcrRead('sha256:0,1,2,3,4,5,6,7');
  await drv.close();

  const anchors = join(dir, 'anchors');
  mkdirSync(anchors);
  for (const f of tpm.localCaCerts) copyFileSync(f, join(anchors, basename(f)));
  const policies = join(dir, 'policies');
  mkdirSync(join(policies, 'attestation'), { recursive: true });
  mkdirSync(join(policies, 'sessions'), { recursive: true });
  writeFileSync(
    join(policies, 'attestation', 'agent-hosts.yaml'),
    [
      'id: agent-hosts', 'version: 1', 'hosts:', '  labels:', '    role: agent-e2e',
      'enrollment:', '  requireEkCertificate: true',
      'pcrs:', '  bank: sha256', '  indices: [0, 1, 2, 3, 4, 5, 6, 7]', '  referenceValues:',
      ...Object.entries(pcrs.sha256!).map(([i, v]) => `    "${i}": ["${v}"]`),
      'nonceTtl: PT60S', '',
    ].join('\n'),
  );
  writeFileSync(
    join(policies, 'sessions', 'agent-enclaves.yaml'),
    [
      'id: agent-enclaves', 'version: 1', 'hosts:', '  labels:', '    role: agent-e2e',
      'attestationPolicy: agent-hosts', 'audiences:', `  - "${AUDIENCE}"`, 'tokenTtl: PT5M',
      'disclose:', '  - ear.appraisal-policy-id', 'issuerKey: session-issuer', '',
    ].join('\n'),
  );
  svc = await startTestService({ hsm: ks, env: { CUSTOS_POLICY_DIR: policies, CUSTOS_EK_CA_DIR: anchors } });
});

afterAll(async () => {
  await svc?.close();
  await tpm?.stop();
  await hsm?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('custos-agent against the custos server', () => {
  it('enrolls with a provisioning token: EK certificate from NV, credential activated, AK persisted', async () => {
    const r = await agent(['--json', 'enroll', '--provisioning-token-file', await provisioningTokenFile('pt1'), '--label', 'role=agent-e2e']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.out) as { hostId: string; akName: string; ekCertificate: boolean };
    expect(printed.ekCertificate).toBe(true);
    hostId = printed.hostId;
    const h = await svc.call('GET', `/v1/hosts/${hostId}`, undefined, svc.tokens.auditor);
    expect(h.status).toBe(200);
    expect(h.body).toMatchObject({ hostId, status: 'active', akName: printed.akName });
    expect(await loadState(state)).toMatchObject({ hostId, akHandle: '0x81010002', url: svc.url });
  });

  it('attests affirming (exit 0)', async () => {
    const r = await agent(['attest']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`host ${hostId}: affirming`);
  });

  it('gets a session: the token verifies against the live JWKS and is bound to the key written 0600', async () => {
    const keyOut = join(dir, 'agent', 'session.key');
    const tokenOut = join(dir, 'agent', 'session.jwt');
    const r = await agent(['--json', 'session', '--audience', AUDIENCE, '--key-out', keyOut, '--token-out', tokenOut]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.out) as { claims: { 'cnf.jkt': string; jti: string } };
    firstToken = (await readFile(tokenOut, 'utf8')).trim();
    const jwks = await svc.call('GET', '/.well-known/jwks.json', undefined, null);
    const { payload } = await jwtVerify(firstToken, createLocalJWKSet(jwks.body as JSONWebKeySet), { audience: AUDIENCE });
    expect(payload.sub).toBe(hostId);
    expect((payload.cnf as { jkt: string }).jkt).toBe(printed.claims['cnf.jkt']);
    expect(payload.jti).toBe(printed.claims.jti);
    const key = await readFile(keyOut);
    expect(key).toHaveLength(32);
    expect((await stat(keyOut)).mode & 0o777).toBe(0o600);
    expect((await stat(tokenOut)).mode & 0o777).toBe(0o600);
    expect(r.out).not.toContain(key.toString('hex'));
    expect(r.out).not.toContain(key.toString('base64url'));
    const intro = await svc.call('POST', '/v1/sessions/introspect', { token: firstToken }, null);
    expect(intro.body.active).toBe(true);
  });

  it('refuses an audience the session policy does not allow (exit 1, no key written)', async () => {
    const keyOut = join(dir, 'agent', 'other.key');
    const r = await agent(['session', '--audience', 'https://elsewhere.example', '--key-out', keyOut]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_AUDIENCE_NOT_ALLOWED/);
    await expect(stat(keyOut)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('after a PCR change: attest is contraindicated naming PCR 7, and no session is issued', async () => {
    expect((await agent(['pcr', 'extend', '--index', '7', '--data', 'unsigned bootloader'])).code).toBe(0);
    const r = await agent(['--json', 'attest']);
    expect(r.code).toBe(1);
    const verdict = JSON.parse(r.out) as { status: string; failures: Array<{ code: string; detail: string }> };
    expect(verdict.status).toBe('contraindicated');
    expect(verdict.failures.map((f) => f.code)).toContain('ERR_QUOTE_PCR_POLICY');
    expect(verdict.failures.find((f) => f.code === 'ERR_QUOTE_PCR_POLICY')?.detail).toMatch(/7/);
    const s = await agent(['session', '--audience', AUDIENCE, '--key-out', join(dir, 'agent', 'refused.key')]);
    expect(s.code).toBe(1);
    expect(s.err).toMatch(/ERR_ATTESTATION_FAILED/);
  });

  it('a used provisioning token is refused (exit 1) and the state of the enrolled host is kept', async () => {
    const file = await provisioningTokenFile('pt2');
    const other = join(dir, 'other-state.json');
    const ok = await runAgent(['node', 'custos-agent', '--url', svc.url, '--tcti', tpm.tcti, '--state', other, 'enroll', '--provisioning-token-file', file, '--ek', 'ecc384', '--ak', 'ecc', '--ak-handle', '0x81010003', '--label', 'role=agent-e2e'], { stdout: () => undefined, stderr: () => undefined, env: {} });
    expect(ok).toBe(0);
    expect(await loadState(other)).toMatchObject({ ekAlg: 'ecc384', akAlg: 'ecc', akHandle: '0x81010003' });
    const before = await readFile(state, 'utf8');
    const again = await agent(['enroll', '--provisioning-token-file', file]);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/ERR_PROVISIONING_TOKEN/);
    expect(await readFile(state, 'utf8')).toBe(before);
  });

  it('after revocation: attest is refused and the earlier token is no longer active', async () => {
    const rv = await svc.call('POST', `/v1/hosts/${hostId}/revoke`, { reason: 'decommissioned' }, svc.tokens.operator);
    expect(rv.status, JSON.stringify(rv.body)).toBeLessThan(300);
    const r = await agent(['attest']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_HOST_REVOKED/);
    const intro = await svc.call('POST', '/v1/sessions/introspect', { token: firstToken }, null);
    expect(intro.body.active).toBe(false);
    expect(decodeJwt(firstToken).sub).toBe(hostId);
  });
});
