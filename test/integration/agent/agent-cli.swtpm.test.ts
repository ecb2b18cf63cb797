/**
 * The agent's commands end to end against swtpm and an in-test stand-in for the host endpoints
 * (fake-custos.ts, built from custos's own verifier pieces).
 */
import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { calculateJwkThumbprint, decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent, type AgentIo } from '../../../src/cli/agent/program.js';
import { loadState } from '../../../src/cli/agent/state.js';
import { TpmDriver } from '../../../src/cli/agent/tpm.js';
import { startSwtpm, type Swtpm } from '../../helpers/swtpm.js';
import { startFakeCustos, type FakeCustos } from './fake-custos.js';

let tpm: Swtpm;
let server: FakeCustos;
let dir: string;

interface Run {
  code: number;
  out: string;
  err: string;
}

async function agent(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  let out = '';
  let err = '';
  const io: AgentIo = { stdout: (t) => (out += t), stderr: (t) => (err += t), env: { HOME: dir, ...env } };
  const code = await runAgent(['node', 'custos-agent', ...args], io);
  return { code, out, err };
}

function globals(state: string): string[] {
  return ['--url', server.url, '--tcti', tpm.tcti, '--state', state];
}

async function pinCurrentPcrs(): Promise<void> {
  const d = await TpmDriver.open({ tcti: tpm.tcti });
  try {
    const v = await d.pcrRead('sha256:0,1,2,3,4,5,6,7');
    server.reference = Object.fromEntries(Object.entries(v.sha256!).map(([i, h]) => [i, [Buffer.from(h, 'hex')]]));
  } finally {
    await d.close();
  }
}

beforeAll(async () => {
  tpm = await startSwtpm();
  server = await startFakeCustos({ provisioningToken: 'pt-0123456789' });
  dir = await mkdtemp(join(tmpdir(), 'custos-agent-cli-'));
  await writeFile(join(dir, 'pt'), 'pt-0123456789\n', { mode: 0o600 });
  await writeFile(join(dir, 'api-token'), 'api-token-value\n', { mode: 0o600 });
});

afterAll(async () => {
  await server?.close();
  await tpm?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('custos-agent against swtpm', () => {
  it('enrolls with the RSA EK and its certificate, then attests affirming; a changed PCR is contraindicated', async () => {
    const state = join(dir, 'rsa', 'state.json');
    const e = await agent([...globals(state), '--json', 'enroll', '--provisioning-token-file', join(dir, 'pt'), '--token-file', join(dir, 'api-token'), '--label', 'role=ledger', '--label', 'zone=a']);
    expect(e.err).toBe('');
    expect(e.code).toBe(0);
    const printed = JSON.parse(e.out) as { hostId: string; akName: string; akHandle: string; ekAlg: string; ekCertificate: boolean };
    expect(printed.ekAlg).toBe('rsa');
    expect(printed.ekCertificate).toBe(true);
    expect(printed.akHandle).toBe('0x81010002');
    expect(server.hosts.get(printed.hostId)?.ak.name.toString('hex')).toBe(printed.akName);
    const sent = server.enrollments.at(-1)!;
    expect(Object.keys(sent).sort()).toEqual(['akPublic', 'ekCertificate', 'ekPublic', 'labels', 'provisioningToken']);
    expect(sent.labels).toEqual({ role: 'ledger', zone: 'a' });
    expect(server.enrollAuth.at(-1)).toBe('Bearer api-token-value');
    // Neither token reaches the output.
    expect(e.out).not.toContain('pt-0123456789');
    expect(e.out).not.toContain('api-token-value');

    const s = await loadState(state);
    expect(s).toMatchObject({ hostId: printed.hostId, akHandle: '0x81010002', akAlg: 'rsa', ekAlg: 'rsa', url: server.url, labels: { role: 'ledger', zone: 'a' } });
    expect((await stat(state)).mode & 0o777).toBe(0o600);

    await pinCurrentPcrs();
    // The URL comes from the state file now.
    const ok = await agent(['--tcti', tpm.tcti, '--state', state, 'attest']);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain(`host ${printed.hostId}: affirming`);

    expect((await agent(['--tcti', tpm.tcti, '--state', state, 'pcr', 'extend', '--index', '7', '--data', 'rogue bootloader'])).code).toBe(0);
    const bad = await agent(['--tcti', tpm.tcti, '--state', state, '--json', 'attest']);
    expect(bad.code).toBe(1);
    const verdict = JSON.parse(bad.out) as { status: string; failures: Array<{ code: string; detail: string }> };
    expect(verdict.status).toBe('contraindicated');
    expect(verdict.failures.map((f) => f.code)).toEqual(['ERR_QUOTE_PCR_POLICY']);
  });

  it('enrolls with the P-384 EK and an ECC AK at another handle, and gets a session whose key matches the server', async () => {
    const state = join(dir, 'ecc', 'state.json');
    const e = await agent([...globals(state), 'enroll', '--provisioning-token-file', join(dir, 'pt'), '--ek', 'ecc384', '--ak', 'ecc', '--ak-handle', '0x81010010']);
    expect(e.code).toBe(0);
    const s = (await loadState(state))!;
    expect(s).toMatchObject({ ekAlg: 'ecc384', akAlg: 'ecc', akHandle: '0x81010010' });
    expect(server.enrollAuth.at(-1)).toBeUndefined();
    await pinCurrentPcrs();

    const keyOut = join(dir, 'ecc', 'keys', 'session.key');
    const tokenOut = join(dir, 'ecc', 'session.jwt');
    const r = await agent([...globals(state), '--json', 'session', '--audience', 'ledger-a', '--key-out', keyOut, '--token-out', tokenOut]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.out) as { claims: { jti: string; sub: string; aud: string }; keyFile: string; tokenFile: string };
    expect(printed.claims.sub).toBe(s.hostId);
    expect(printed.keyFile).toBe(keyOut);
    const key = await readFile(keyOut);
    expect(key).toEqual(server.sessionKeys.get(printed.claims.jti));
    expect((await stat(keyOut)).mode & 0o777).toBe(0o600);
    expect((await stat(tokenOut)).mode & 0o777).toBe(0o600);
    const token = (await readFile(tokenOut, 'utf8')).trim();
    expect(decodeJwt(token).aud).toBe('ledger-a');
    // The session key never reaches the output.
    expect(r.out).not.toContain(key.toString('hex'));
    expect(r.out).not.toContain(key.toString('base64'));
    expect(r.out).not.toContain(key.toString('base64url'));
  });

  it('keeps the ephemeral private key when asked: it is the key the token is bound to, and proves possession', async () => {
    const state = join(dir, 'ecc', 'state.json');
    const ephOut = join(dir, 'ecc', 'ephemeral.jwk');
    const r = await agent([...globals(state), '--json', 'session', '--audience', 'ledger-a', '--key-out', join(dir, 'ecc', 'k2'), '--token-out', join(dir, 'ecc', 't2'), '--ephemeral-key-out', ephOut]);
    expect([r.code, r.err]).toEqual([0, '']);
    expect((JSON.parse(r.out) as { ephemeralKeyFile: string }).ephemeralKeyFile).toBe(ephOut);
    expect((await stat(ephOut)).mode & 0o777).toBe(0o600);
    const jwk = JSON.parse(await readFile(ephOut, 'utf8')) as { kty: string; crv: string; x: string; y: string; d: string };
    const token = (await readFile(join(dir, 'ecc', 't2'), 'utf8')).trim();
    expect(await calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, 'sha256')).toBe((decodeJwt(token).cnf as { jkt: string }).jkt);
    // A proof a relying party can check against the bound key.
    const proof = sign('sha256', Buffer.from('relying-party challenge'), createPrivateKey({ key: jwk, format: 'jwk' }));
    expect(verify('sha256', Buffer.from('relying-party challenge'), createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, format: 'jwk' }), proof)).toBe(true);
    expect(r.out).not.toContain(jwk.d);
    // The three outputs must be three files: a usage error (exit 2) otherwise.
    expect((await agent([...globals(state), 'session', '--audience', 'x', '--key-out', ephOut, '--token-out', join(dir, 'ecc', 't3'), '--ephemeral-key-out', ephOut])).code).toBe(2);
  });

  for (const tamper of ['jkt', 'aud', 'sub'] as const) {
    it(`refuses a session token with another ${tamper} (exit 1, no key or token written)`, async () => {
      const state = join(dir, 'ecc', 'state.json');
      const keyOut = join(dir, 'ecc', `tampered-${tamper}.key`);
      const tokenOut = join(dir, 'ecc', `tampered-${tamper}.jwt`);
      server.tamper = tamper;
      try {
        const r = await agent([...globals(state), 'session', '--audience', 'ledger-a', '--key-out', keyOut, '--token-out', tokenOut]);
        expect(r.code).toBe(1);
        expect(r.err).toMatch(/ERR_TOKEN_INVALID/);
      } finally {
        server.tamper = 'none';
      }
      await expect(stat(keyOut)).rejects.toMatchObject({ code: 'ENOENT' });
      await expect(stat(tokenOut)).rejects.toMatchObject({ code: 'ENOENT' });
    });
  }

  it('refuses an enrollment without the provisioning token (exit 1) and keeps the earlier state', async () => {
    const state = join(dir, 'rsa', 'state.json');
    const before = await readFile(state, 'utf8');
    const r = await agent([...globals(state), 'enroll', '--ak', 'ecc']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_PROVISIONING_TOKEN/);
    expect(await readFile(state, 'utf8')).toBe(before);
  });

  it('a session whose PCRs are not affirming gets no key file', async () => {
    const state = join(dir, 'rsa', 'state.json');
    const keyOut = join(dir, 'rsa', 'no.key');
    expect((await agent(['--tcti', tpm.tcti, '--state', state, 'pcr', 'extend', '--index', '5', '--data', 'changed'])).code).toBe(0);
    const r = await agent([...globals(state), 'session', '--audience', 'x', '--key-out', keyOut]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_ATTESTATION_FAILED/);
    await expect(stat(keyOut)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('an unreachable TPM exits 3', async () => {
    const state = join(dir, 'ecc', 'state.json');
    const r = await agent(['--url', server.url, '--tcti', 'swtpm:host=127.0.0.1,port=1', '--state', state, 'attest']);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/ERR_TPM_UNAVAILABLE/);
  });
});
