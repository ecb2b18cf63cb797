import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';
import { expectUnbrokenChain } from '../../helpers/audit-chain.js';
import { startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';

/**
 * The scheduler is SIGKILLed at every journaled step of a rotation (and at random moments), over
 * and over, against a real SoftHSM2 token, in separate processes. Afterwards: every key has exactly
 * one active version, every live version's HSM object exists, every destroyed one is gone, no
 * custos object is unaccounted for, the journal is empty, and the audit chain verifies.
 */
const FAILPOINTS = [
  'generate.after-intent', 'generate.after-hsm', 'generate.after-commit',
  'activate.inside-transaction', 'destroy.after-intent', 'destroy.after-hsm', 'rotation.after-step',
];
const TRIALS = 105;
const CHILD = join(process.cwd(), 'test', 'fixtures', 'rotation-child.mjs');

let hsm: SoftHsm;
let dir: string;
let env: NodeJS.ProcessEnv;
/**
 * SoftHSM2 rewrites its token file (`token.object`: label, flags, the wrapped PIN keys) in place,
 * truncating it first, at every C_Login; a process killed in that window leaves it empty and the
 * token unusable by anyone (seen once in a run of the suite on a fresh clone: every later trial
 * found no token). That is SoftHSM2's file store, not custos, and not what this test is about:
 * the file as C_InitToken wrote it is kept and put back when a kill has emptied it, and the count
 * is reported.
 */
let tokenFile: string;
let tokenFileRestored = 0;
function restoreEmptiedTokenFile(): void {
  if (statSync(tokenFile).size > 0) return;
  copyFileSync(join(dir, 'token.object.initial'), tokenFile);
  tokenFileRestored++;
}

beforeAll(async () => {
  if (!existsSync(join(process.cwd(), 'dist', 'compose.js'))) throw new Error('run `npm run build` first: the scheduler processes run the build output');
  hsm = await startSoftHsm();
  dir = mkdtempSync(join(tmpdir(), 'custos-crash-'));
  const [slotDir] = readdirSync(hsm.tokenDir);
  tokenFile = join(hsm.tokenDir, slotDir!, 'token.object');
  copyFileSync(tokenFile, join(dir, 'token.object.initial'));
  const policies = join(dir, 'policies');
  mkdirSync(join(policies, 'rotation'), { recursive: true });
  writeFileSync(join(policies, 'rotation', 'crash.yaml'), [
    'id: crash-test', 'version: 1', 'profile: test', 'selector:', '  names: ["crash-*"]',
    'rotateEvery: PT10M', 'prePublish: PT2M', 'deactivateAfter: PT5M', 'destroyAfter: PT8M', 'destroyPendingWindow: PT3M', '',
  ].join('\n'));
  writeFileSync(join(dir, 'pin'), hsm.pin);
  env = {
    ...process.env, ...hsm.env,
    CUSTOS_STATE_DIR: dir, CUSTOS_POLICY_DIR: policies, CUSTOS_PKCS11_MODULE: hsm.module, CUSTOS_PKCS11_TOKEN_LABEL: hsm.tokenLabel,
    CUSTOS_PKCS11_PIN_FILE: join(dir, 'pin'), CUSTOS_RECONCILE_GRACE_SECONDS: '0', CUSTOS_PKCS11_WORKERS: '1',
    TEST_T0: String(Date.UTC(2027, 0, 4)), TEST_R0: String(Date.now()), TEST_SCALE: '600',
  };
});

afterAll(async () => {
  await hsm?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function runChild(extra: NodeJS.ProcessEnv, killAfterMs: number | null): Promise<{ signal: NodeJS.Signals | null; code: number | null; stdout: string; stderr: string }> {
  restoreEmptiedTokenFile();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD], { env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = killAfterMs === null ? null : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('rotation scheduler crash safety (SIGKILL, real processes, SoftHSM2)', () => {
  it(`survives ${TRIALS} kills at every step`, async () => {
    const hits = new Map<string, number>();
    let seed = 0x2545f491;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) % 1000) / 1000;
    for (let i = 0; i < TRIALS; i++) {
      const point = i % 3 === 2 ? undefined : FAILPOINTS[i % FAILPOINTS.length];
      // Armed trials get a generous backstop so that a slow start on a loaded machine still
      // reaches the failpoint; the others are killed at a random moment.
      const r = await runChild(point ? { CUSTOS_FAILPOINTS: point } : {}, point ? 15_000 : 400 + Math.floor(rand() * 1600));
      expect(r.signal, r.stderr + r.stdout).toBe('SIGKILL');
      const hit = /FAILPOINT (\S+)/.exec(r.stderr)?.[1] ?? 'timer';
      hits.set(hit, (hits.get(hit) ?? 0) + 1);
    }
    // Every journaled step was actually interrupted, several times.
    for (const p of FAILPOINTS) expect(hits.get(p) ?? 0, `failpoint ${p} hits: ${JSON.stringify([...hits])}`).toBeGreaterThanOrEqual(3);
    if (tokenFileRestored > 0) console.warn(`SoftHSM2's token file was emptied by a kill during C_Login and restored ${tokenFileRestored} time(s)`);

    const final = await runChild({ TEST_ONCE: '1' }, null);
    expect(final.code, final.stderr).toBe(0);
    const report = JSON.parse(/REPORT (.*)/.exec(final.stdout)![1]!);
    expect(report.missingObjects).toEqual([]);
    expect(report.unaccounted).toEqual([]);

    const store = new SqliteStore(join(dir, 'custos.db'));
    const ks = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, workers: 1 });
    try {
      expect(await store.listIntents()).toEqual([]);
      const versions = await store.listAllVersions();
      for (const name of ['crash-sig', 'crash-data']) {
        const mine = versions.filter((v) => v.keyName === name);
        expect(mine.filter((v) => v.state === 'active'), name).toHaveLength(1);
        expect(mine.length, `${name} rotated`).toBeGreaterThanOrEqual(4);
        expect(mine.some((v) => v.state === 'destroyed'), `${name} had a version destroyed`).toBe(true);
      }
      const objects = await ks.listKeys();
      const objectIds = new Set(objects.map((o) => o.id));
      for (const v of versions) expect(objectIds.has(v.hsmId), `${v.keyName} v${v.version} ${v.state}`).toBe(v.state !== 'destroyed');
      expect(objects).toHaveLength(versions.filter((v) => v.state !== 'destroyed').length);

      const events = await store.listAudit(0, 1_000_000);
      expectUnbrokenChain(events);
    } finally {
      await ks.close();
      await store.close();
    }
  }, 600_000);
});
