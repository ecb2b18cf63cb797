import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initToken } from '../../src/hsm/pkcs11/init-token.js';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

/**
 * Environment of a child process that talks to the token through pkcs11js directly: where
 * pkcs11js is, the module, the token label and the PIN (through the environment, never argv),
 * plus `extra`.
 */
export function pkcs11ChildEnv(hsm: SoftHsm, extra: Record<string, string>): NodeJS.ProcessEnv {
  return {
    ...hsm.env,
    PKCS11JS: createRequire(import.meta.url).resolve('pkcs11js'),
    MODULE: hsm.module,
    LABEL: hsm.tokenLabel,
    CHILD_PIN: hsm.pin,
    ...extra,
  };
}

export interface SoftHsm {
  module: string;
  /** Path of the private softhsm2.conf. */
  conf: string;
  tokenLabel: string;
  pin: string;
  soPin: string;
  /** Temp directory holding the conf and tokens/. */
  dir: string;
  tokenDir: string;
  /** Environment for child processes (SOFTHSM2_CONF set). */
  env: NodeJS.ProcessEnv;
  cleanup(): Promise<void>;
}

/**
 * Creates a private SoftHSM2 token in a temp folder: writes a softhsm2.conf, points
 * process.env.SOFTHSM2_CONF at it (SoftHSM2 reads it at C_Initialize), and initializes a fresh
 * token through {@link initToken}. One SOFTHSM2_CONF per process: call this once per test file.
 */
export async function startSoftHsm(opts: { label?: string } = {}): Promise<SoftHsm> {
  if (!existsSync(SOFTHSM_MODULE)) throw new Error(`SoftHSM2 module not found at ${SOFTHSM_MODULE}`);
  const dir = await mkdtemp(join(tmpdir(), 'custos-softhsm-'));
  const tokenDir = join(dir, 'tokens');
  await mkdir(tokenDir, { recursive: true });
  const conf = join(dir, 'softhsm2.conf');
  await writeFile(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const previous = process.env.SOFTHSM2_CONF;
  process.env.SOFTHSM2_CONF = conf;
  const tokenLabel = opts.label ?? `custos-test-${randomBytes(4).toString('hex')}`;
  const pin = randomBytes(8).toString('hex');
  const soPin = randomBytes(8).toString('hex');
  await initToken({ module: SOFTHSM_MODULE, label: tokenLabel, soPin, pin });
  return {
    module: SOFTHSM_MODULE,
    conf,
    tokenLabel,
    pin,
    soPin,
    dir,
    tokenDir,
    env: { ...process.env, SOFTHSM2_CONF: conf },
    async cleanup() {
      if (previous === undefined) delete process.env.SOFTHSM2_CONF;
      else process.env.SOFTHSM2_CONF = previous;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
