import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { cliState, runCustos, spawnServe, type Served } from '../helpers/cli.js';
import { startSoftHsm, type SoftHsm } from '../helpers/softhsm.js';

/**
 * The operator's path as scripts take it: `custos init`, `custos serve` and the client commands
 * as real processes from the build output, against a real SoftHSM2 token. Exit codes: 0 done,
 * 1 refused, 2 usage/config, 3 unavailable.
 */
let hsm: SoftHsm;
let dir: string;
let env: NodeJS.ProcessEnv;
let served: Served;
let url = '';

const custos = (args: string[], extra: NodeJS.ProcessEnv = {}) => runCustos(env, args, extra);

beforeAll(async () => {
  hsm = await startSoftHsm();
  ({ dir, env } = cliState(hsm, 'custos-cli-'));
});

afterAll(async () => {
  if (served && served.child.exitCode === null) served.child.kill('SIGKILL');
  await hsm?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe('custos CLI against a served instance', () => {
  it('init writes the admin token to a 0600 file, never to stdout, and is idempotent', () => {
    const r = custos(['init']);
    expect(r.code, r.stderr).toBe(0);
    const tokenFile = join(dir, 'admin.token');
    const token = readFileSync(tokenFile, 'utf8').trim();
    expect(token).toMatch(/^custos_/);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(r.stdout + r.stderr).not.toContain(token);
    const again = custos(['init', '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).created).toBe(false);
    expect(readFileSync(tokenFile, 'utf8').trim()).toBe(token);
  });

  it('serve starts and prints where it listens', async () => {
    served = spawnServe(env);
    url = (await served.listening).listening;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    env.CUSTOS_URL = url;
  });

  it('creates, shows, signs and verifies with exit codes scripts can trust', () => {
    const c = custos(['--json', 'keys', 'create', 'cli-key', '--type', 'ec-p256', '--purpose', 'sign', '--rotation-policy', 'manual']);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout).versions[0].state).toBe('active');
    const s = custos(['--json', 'keys', 'sign', 'cli-key', '--data', 'hello']);
    expect(s.code, s.stderr).toBe(0);
    const sig = JSON.parse(s.stdout).signature as string;
    expect(custos(['keys', 'verify', 'cli-key', '--data', 'hello', '--signature', sig]).code).toBe(0);
    const bad = custos(['keys', 'verify', 'cli-key', '--data', 'other', '--signature', sig]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('INVALID');
    // sign-batch: files in, one signature per line out, each verifying its own file.
    const f1 = join(dir, 'one.txt');
    const f2 = join(dir, 'two.txt');
    writeFileSync(f1, 'first');
    writeFileSync(f2, 'second');
    const b = custos(['keys', 'sign-batch', 'cli-key', f1, f2]);
    expect(b.code, b.stderr).toBe(0);
    const sigs = b.stdout.trim().split('\n');
    expect(sigs).toHaveLength(2);
    expect(custos(['keys', 'verify', 'cli-key', '--data', 'second', '--signature', sigs[1]!]).code).toBe(0);
    expect(custos(['keys', 'verify', 'cli-key', '--data', 'first', '--signature', sigs[1]!]).code).toBe(1);
    expect(custos(['keys', 'sign-batch', 'cli-key']).code).toBe(2);
    const rot = custos(['keys', 'rotate', 'cli-key', '--reason', 'cli test']);
    expect(rot.code).toBe(0);
    expect(rot.stdout).toContain('v2 is now active');
    const list = custos(['keys', 'list']);
    expect(list.stdout).toMatch(/v1\s+deactivated/);
  });

  it('refusals exit 1 with the error code; usage and configuration errors exit 2; an unreachable server exits 3', () => {
    const nf = custos(['keys', 'show', 'nope']);
    expect(nf.code).toBe(1);
    expect(nf.stderr).toContain('ERR_KEY_NOT_FOUND');
    expect(custos(['keys', 'create', 'x', '--type', 'ed25519', '--purpose', 'sign']).code).toBe(2);
    const cfg = custos(['serve'], { CUSTOS_LISTEN: 'not-a-host-port' });
    expect(cfg.code).toBe(2);
    expect(cfg.stderr).toContain('listen');
    const down = custos(['keys', 'list'], { CUSTOS_URL: 'http://127.0.0.1:9' });
    expect(down.code).toBe(3);
  });

  it('a token with a weaker role is refused, and token files are written 0600', () => {
    const f = join(dir, 'auditor.token');
    const t = custos(['tokens', 'create', 'ci-auditor', '--role', 'auditor', '--output', f]);
    expect(t.code, t.stderr).toBe(0);
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(t.stdout).not.toContain(readFileSync(f, 'utf8').trim());
    const r = custos(['--token-file', f, 'keys', 'create', 'y', '--type', 'ec-p256', '--purpose', 'sign', '--rotation-policy', 'manual']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ERR_FORBIDDEN');
    expect(custos(['--token-file', f, 'keys', 'list']).code).toBe(0);
  });

  it('hosts revoke --revoke-provisioning-token uses up the token the host enrolled with, and says so', async () => {
    // A host enrolled with a fleet token (written straight into the shared database, as another replica would).
    const store = new SqliteStore(join(dir, 'custos.db'));
    const t = new Date().toISOString();
    const later = new Date(Date.now() + 3_600_000).toISOString();
    try {
      await store.tx(async (x) => {
        await x.insertProvisioningToken({ id: 'pt-fleet', tokenHash: 'ab'.repeat(32), createdAt: t, createdBy: 'test', expiresAt: later, usesLeft: 5, labels: {} });
        await x.insertHost({
          id: 'h-cli', status: 'active', akName: '000b' + 'aa'.repeat(32), akPublic: 'AAAA', akQualifiedName: '000b' + 'bb'.repeat(32), ekPublicHash: 'cc'.repeat(32),
          ekCertificateSubject: null, ekCertificateIssuer: null, labels: {}, policyId: 'prod-boot', enrolledAt: t, revokedAt: null, lastAttestation: null, lastClock: null,
        });
        await x.insertEnrollment({
          id: 'e-cli', status: 'activated', akPublic: 'AAAA', akName: '000b' + 'aa'.repeat(32), akQualifiedName: '000b' + 'bb'.repeat(32), ekPublicHash: 'cc'.repeat(32),
          ekCertificateSubject: null, ekCertificateIssuer: null, policyId: 'prod-boot', secretHash: 'dd'.repeat(32), labels: {}, provisioningTokenId: 'pt-fleet',
          actor: 'test', createdAt: t, expiresAt: later, hostId: 'h-cli',
        });
      });
    } finally {
      await store.close();
    }
    const r = custos(['hosts', 'revoke', 'h-cli', '--reason', 'decommissioned', '--revoke-provisioning-token']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('is revoked');
    expect(r.stdout).toContain('provisioning token pt-fleet: its remaining uses are gone');
    const again = custos(['--json', 'hosts', 'revoke', 'h-cli']);
    expect(JSON.parse(again.stdout)).toMatchObject({ hostId: 'h-cli', status: 'revoked', provisioningTokenId: 'pt-fleet' });
    const check = new SqliteStore(join(dir, 'custos.db'));
    try {
      expect(await check.findLiveProvisioningToken('ab'.repeat(32), new Date().toISOString())).toBeNull();
    } finally {
      await check.close();
    }
  });

  it('stops cleanly on SIGTERM, and its log holds neither the PIN nor any token', async () => {
    const exit = new Promise<number | null>((r) => served.child.on('exit', (c) => r(c)));
    served.child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(served.log()).toContain('custos listening');
    expect(served.log()).not.toContain(hsm.pin);
    expect(served.log()).not.toMatch(/custos_[A-Za-z0-9_-]{43}/);
  });
});
