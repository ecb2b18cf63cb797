/**
 * The agent's state file: which host this TPM is enrolled as, where its AK is persisted and
 * which server enrolled it. Nothing in it is secret, but it names the AK the host attests with,
 * so it is written owner-only (0600, folder 0700) and replaced atomically.
 */
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CustosError } from '../../lib/errors.js';

/** Contents of the state file (version 1). */
export interface AgentState {
  readonly version: 1;
  readonly hostId: string;
  /** Persistent handle of the AK, `0x81010002`. */
  readonly akHandle: string;
  /** AK Name, hex. */
  readonly akName: string;
  readonly akAlg: 'rsa' | 'ecc';
  readonly ekAlg: 'rsa' | 'ecc384';
  /** Server the host enrolled with. */
  readonly url?: string;
  readonly enrolledAt: string;
  readonly labels?: Readonly<Record<string, string>>;
}

/** `~/.config/custos-agent/state.json` (XDG_CONFIG_HOME respected). */
export function defaultStatePath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME && env.XDG_CONFIG_HOME.startsWith('/') ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(base, 'custos-agent', 'state.json');
}

function invalid(path: string, why: string): never {
  throw new CustosError('ERR_BAD_REQUEST', `the state file ${path} is invalid: ${why}`);
}

const HANDLE = /^0x81[0-9a-f]{6}$/;
const HEX = /^[0-9a-f]+$/;

/**
 * Validates parsed state.
 * @throws ERR_BAD_REQUEST naming the first wrong member
 */
export function validateState(value: unknown, path = 'state'): AgentState {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) invalid(path, 'not a JSON object');
  const v = value as Record<string, unknown>;
  if (v.version !== 1) invalid(path, 'unsupported version');
  if (typeof v.hostId !== 'string' || v.hostId === '' || v.hostId.length > 200) invalid(path, 'hostId');
  if (typeof v.akHandle !== 'string' || !HANDLE.test(v.akHandle)) invalid(path, 'akHandle');
  if (typeof v.akName !== 'string' || !HEX.test(v.akName) || v.akName.length % 2 !== 0) invalid(path, 'akName');
  if (v.akAlg !== 'rsa' && v.akAlg !== 'ecc') invalid(path, 'akAlg');
  if (v.ekAlg !== 'rsa' && v.ekAlg !== 'ecc384') invalid(path, 'ekAlg');
  if (v.url !== undefined && (typeof v.url !== 'string' || !/^https?:\/\//.test(v.url))) invalid(path, 'url');
  if (typeof v.enrolledAt !== 'string' || Number.isNaN(Date.parse(v.enrolledAt))) invalid(path, 'enrolledAt');
  if (v.labels !== undefined) {
    if (typeof v.labels !== 'object' || v.labels === null || Array.isArray(v.labels)) invalid(path, 'labels');
    for (const x of Object.values(v.labels)) if (typeof x !== 'string') invalid(path, 'labels');
  }
  return v as unknown as AgentState;
}

/**
 * Reads the state file; undefined when it does not exist.
 * @throws ERR_BAD_REQUEST when it is not valid JSON or not valid state
 */
export async function loadState(path: string): Promise<AgentState | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    invalid(path, 'not JSON');
  }
  return validateState(parsed, path);
}

// Creates `tmp` exclusively with mode 0600 (a leftover with wider mode is removed first, and
// the umask can only narrow the mode), then renames it over `path`.
async function writeNew(tmp: string, path: string, data: Buffer | string): Promise<void> {
  await rm(tmp, { force: true });
  await writeFile(tmp, data, { mode: 0o600, flag: 'wx' });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}

/**
 * Writes the state file atomically with mode 0600 (its folder created 0700 when missing).
 * @throws ERR_BAD_REQUEST when `state` is not valid
 */
export async function saveState(path: string, state: AgentState): Promise<void> {
  validateState(state, path);
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeNew(`${path}.${process.pid}.tmp`, path, JSON.stringify(state, null, 2) + '\n');
}

/**
 * Writes a file that holds a secret (session key, token): created 0600, never left wider.
 * The folder is created 0700 when missing.
 */
export async function writePrivateFile(path: string, data: Buffer | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeNew(`${path}.${process.pid}.tmp`, path, data);
}
