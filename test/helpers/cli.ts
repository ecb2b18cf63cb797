import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SoftHsm } from './softhsm.js';

/** The `custos` command from the build output, as scripts and operators run it. */
export const CUSTOS_BIN = join(process.cwd(), 'bin', 'custos.js');

/**
 * A state folder for `custos init` / `custos serve` on a test token: the PIN in a 0600 file, a
 * free loopback port, no rotation scheduler, and none of the caller's client settings.
 */
export function cliState(hsm: SoftHsm, prefix: string, extra: NodeJS.ProcessEnv = {}): { dir: string; env: NodeJS.ProcessEnv } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  writeFileSync(join(dir, 'pin'), hsm.pin, { mode: 0o600 });
  const env: NodeJS.ProcessEnv = {
    ...process.env, ...hsm.env, CUSTOS_STATE_DIR: dir, CUSTOS_PKCS11_MODULE: hsm.module, CUSTOS_PKCS11_TOKEN_LABEL: hsm.tokenLabel,
    CUSTOS_PKCS11_PIN_FILE: join(dir, 'pin'), CUSTOS_LISTEN: '127.0.0.1:0', CUSTOS_ROTATION_ENABLED: 'false', ...extra,
  };
  delete env.CUSTOS_URL;
  delete env.CUSTOS_TOKEN_FILE;
  return { dir, env };
}

/** Runs `custos ARGS` to completion with `env` (plus `extra`): exit code and output. */
export function runCustos(env: NodeJS.ProcessEnv, args: string[], extra: NodeJS.ProcessEnv = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CUSTOS_BIN, ...args], { env: { ...env, ...extra }, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A `custos serve` started by a test: the process, its first `{"listening": …}` line, and its stderr so far. */
export interface Served {
  readonly child: ChildProcess;
  readonly listening: Promise<{ listening: string; processes?: number }>;
  log(): string;
}

/** Starts `custos serve` with `env` (plus `extra`); `listening` rejects if it exits first. */
export function spawnServe(env: NodeJS.ProcessEnv, extra: NodeJS.ProcessEnv = {}): Served {
  const child = spawn(process.execPath, [CUSTOS_BIN, 'serve'], { env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const listening = new Promise<{ listening: string; processes?: number }>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{"listening"'));
      if (line) resolve(JSON.parse(line) as { listening: string; processes?: number });
    });
    child.on('exit', (c) => reject(new Error(`serve exited ${c}: ${log}`)));
  });
  return { child, listening, log: () => log };
}
