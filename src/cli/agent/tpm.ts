/**
 * A small driver over tpm2-tools (5.x) for the host side of enrollment, attestation and
 * sessions. It works against /dev/tpmrm0 and against swtpm alike:
 *
 * - Tools run through execFile (never a shell), one at a time per driver: swtpm serves a single
 *   TCP client and has no resource manager.
 * - After every step that loads a key the transient objects (and, after steps that use
 *   sessions, the sessions) are flushed: without a resource manager the TPM runs out of object
 *   slots after three (TPM_RC_OBJECT_MEMORY). With the kernel resource manager the flush is a
 *   no-op. Steps that only read NV, PCRs or capabilities, or use a persistent key, load nothing.
 * - Working files live in a private temp folder (mode 0700) removed by close(). Secrets (the
 *   activated credential secret) only travel through files there, never argv or stdout logs;
 *   the secret's file is removed as soon as it is read.
 * - The AK is made persistent (TPM2_EvictControl) so that later processes can quote with it
 *   after the saved contexts of this process are gone.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { CustosError } from '../../lib/errors.js';
import { parseTpmsAttest } from '../../attestation/tpm2/attest.js';
import { writeCredentialFile } from '../../attestation/tpm2/credential.js';
import { objectName, parseTpm2bPublic } from '../../attestation/tpm2/public.js';
import { trimCertificatePadding } from '../../attestation/ek-chain.js';
import { tpmHashByNodeName } from '../../attestation/tpm2/algorithms.js';
import { banksOfSelection, formatPcrList, parsePcrList, sameSelection, splitPcrValues, type PcrBank, type PcrHexValues } from './pcr.js';

/** TCTI used when neither a flag nor TPM2TOOLS_TCTI names one. */
export const DEFAULT_TCTI = 'device:/dev/tpmrm0';
/** Persistent handle the AK is stored at unless configured otherwise. */
export const DEFAULT_AK_HANDLE = 0x81010002;

/**
 * NV indices of EK certificates (TCG EK Credential Profile 2.0, §2.2.1.5): RSA-2048 at
 * 0x01c00002 (low range); the ECC NIST P-384 EK certificate in the high range at 0x01c00016.
 */
export const EK_CERT_NV_INDEX = { rsa: 0x01c00002, ecc384: 0x01c00016 } as const;

/** EK types the agent uses: the RSA-2048 EK and the NIST P-384 EK that certificates cover. */
export type EkAlg = 'rsa' | 'ecc384';
/** AK types: RSA-2048 (RSASSA-SHA256) or ECC P-256 (ECDSA-SHA256). */
export type AkAlg = 'rsa' | 'ecc';

/** EK certificates found in NV (DER, padding removed). */
export interface EkCertificates {
  readonly rsa?: Buffer;
  readonly ecc384?: Buffer;
}

/** An EK loaded in this driver (its saved context lives in the driver's temp folder). */
export interface EkObject {
  readonly alg: EkAlg;
  /** Path of the saved context file. */
  readonly context: string;
  /** TPM2B_PUBLIC bytes. */
  readonly public: Buffer;
  /** nameAlg ‖ H(TPMT_PUBLIC). */
  readonly name: Buffer;
}

/** An AK made in this driver. */
export interface AkObject {
  readonly alg: AkAlg;
  /** Path of the saved context file (valid until close()). */
  readonly context: string;
  /** TPM2B_PUBLIC bytes. */
  readonly public: Buffer;
  readonly name: Buffer;
}

/** A key to use: a saved context made by this driver, or a persistent handle. */
export type KeyRef = AkObject | number;

/** What a quote produced. */
export interface QuoteOutput {
  /** TPMS_ATTEST bytes (`tpm2_quote -m`). */
  readonly quote: Buffer;
  /** TPMT_SIGNATURE bytes (`tpm2_quote -s`). */
  readonly signature: Buffer;
  /** PCR values by bank and index, lower-case hex (API.md). */
  readonly pcrs: PcrHexValues;
}

/** Options of {@link TpmDriver.open}. */
export interface TpmDriverOptions {
  /** TCTI string; else TPM2TOOLS_TCTI; else {@link DEFAULT_TCTI}. */
  readonly tcti?: string;
  /** Per-tool timeout in ms (default 60 s: RSA key generation on slow TPMs takes seconds). */
  readonly timeoutMs?: number;
  /** Base folder for the private temp folder (default os.tmpdir()). */
  readonly tmpDir?: string;
  /**
   * File holding the owner hierarchy password (raw bytes), for TPM2_EvictControl. Passed to the
   * tools as `file:PATH`, so the password never appears on a command line.
   */
  readonly ownerAuthFile?: string;
  /** File holding the endorsement hierarchy password, for creating the EK and AK and PolicySecret. */
  readonly endorsementAuthFile?: string;
}

/** What a step leaves loaded and must be flushed after it. */
type Flush = 'none' | 'objects' | 'all';

/** Outcome of one tool run. */
interface ToolRun {
  readonly stdout: string;
  readonly stderr: string;
}

/** Formats a TPM handle as tpm2-tools expects it. */
export function handleHex(handle: number): string {
  return '0x' + handle.toString(16).padStart(8, '0');
}

/**
 * Parses a persistent handle given as hex (`0x81010002`) or decimal.
 * @throws ERR_BAD_REQUEST when it is not in the persistent range 0x81000000–0x81FFFFFF
 * (TPM 2.0 Part 2, §7.2, TPM_HT_PERSISTENT).
 */
export function parsePersistentHandle(text: string | number): number {
  const n = typeof text === 'number' ? text : /^0x[0-9a-f]{1,8}$/i.test(text) ? parseInt(text.slice(2), 16) : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 0x81000000 || n > 0x81ffffff) {
    throw new CustosError('ERR_BAD_REQUEST', `persistent handle ${String(text)} is not in 0x81000000-0x81ffffff`);
  }
  return n;
}

/** Picks the TCTI: explicit value, else TPM2TOOLS_TCTI, else the kernel resource manager. */
export function resolveTcti(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  const t = explicit ?? env.TPM2TOOLS_TCTI;
  return t !== undefined && t.trim() !== '' ? t.trim() : DEFAULT_TCTI;
}

// tpm2-tools limits -q to sizeof(TPMU_HA) (64 bytes); the TPM to sizeof(TPMT_HA).
const MAX_QUALIFYING_DATA = 64;

function lastErrorLine(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const errs = lines.filter((l) => l.startsWith('ERROR'));
  return (errs.at(-2) ?? errs.at(-1) ?? lines.at(-1) ?? '').slice(0, 300);
}

function tpmResponseCode(stderr: string): string | undefined {
  const m = /\((0x[0-9a-fA-F]+)\)/.exec(stderr);
  return m?.[1]?.toLowerCase();
}

/**
 * Drives one TPM through tpm2-tools. Create with {@link TpmDriver.open}; call close() to flush
 * what is left and remove the temp folder.
 */
export class TpmDriver {
  private queue: Promise<unknown> = Promise.resolve();
  private seq = 0;
  private closed = false;

  private constructor(
    /** TCTI passed to every tool. */
    readonly tcti: string,
    /** The private working folder. */
    readonly workDir: string,
    private readonly timeoutMs: number,
    private readonly ownerAuth: string[],
    private readonly endorsementAuth: string[],
  ) {}

  /**
   * Creates a driver with its private temp folder (mkdtemp makes it 0700).
   * Does not touch the TPM yet.
   */
  static async open(options: TpmDriverOptions = {}): Promise<TpmDriver> {
    const dir = await mkdtemp(join(options.tmpDir ?? tmpdir(), 'custos-agent-'));
    const auth = (file: string | undefined): string[] => (file === undefined ? [] : ['-P', `file:${resolvePath(file)}`]);
    return new TpmDriver(resolveTcti(options.tcti), dir, options.timeoutMs ?? 60_000, auth(options.ownerAuthFile), auth(options.endorsementAuthFile));
  }

  /** Flushes transient objects and sessions and removes the temp folder. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.queue.catch(() => undefined);
      await this.flush('all').catch(() => undefined);
    } finally {
      await rm(this.workDir, { recursive: true, force: true });
    }
  }

  private file(stem: string): string {
    this.seq += 1;
    return join(this.workDir, `${this.seq}-${stem}`);
  }

  private run(tool: string, args: readonly string[]): Promise<ToolRun> {
    return new Promise((resolve, reject) => {
      execFile(
        tool,
        [...args],
        { cwd: this.workDir, env: { ...process.env, TPM2TOOLS_TCTI: this.tcti }, timeout: this.timeoutMs, maxBuffer: 4 * 1024 * 1024, encoding: 'utf8' },
        (err, stdout, stderr) => {
          if (err === null) return resolve({ stdout, stderr });
          const e = err as NodeJS.ErrnoException & { killed?: boolean };
          if (e.code === 'ENOENT') {
            return reject(new CustosError('ERR_TPM_UNAVAILABLE', `${tool} was not found: install tpm2-tools`, { details: { tool } }));
          }
          // Only stderr is inspected: tpm2_activatecredential prints the secret on stdout.
          if (e.killed === true) {
            return reject(new CustosError('ERR_TPM_UNAVAILABLE', `${tool} timed out after ${this.timeoutMs} ms (TCTI ${this.tcti})`, { details: { tool } }));
          }
          if (/Could not load tcti|Failed to connect|Cannot connect|Failed to open specified TCTI/i.test(stderr)) {
            return reject(new CustosError('ERR_TPM_UNAVAILABLE', `the TPM is not reachable through TCTI ${this.tcti}`, { details: { tool } }));
          }
          const rc = tpmResponseCode(stderr);
          reject(new CustosError('ERR_TPM_COMMAND', `${tool} failed: ${lastErrorLine(stderr)}`, { details: { tool, ...(rc ? { tpmRc: rc } : {}) } }));
        },
      );
    });
  }

  private async flush(what: Flush): Promise<void> {
    if (what === 'none') return;
    await this.run('tpm2_flushcontext', ['-t']);
    if (what === 'all') {
      // Nothing to flush is not an error for these; a failure here must not hide the step's own.
      await this.run('tpm2_flushcontext', ['-l']).catch(() => undefined);
      await this.run('tpm2_flushcontext', ['-s']).catch(() => undefined);
    }
  }

  /**
   * Runs `body` alone on the TPM, then flushes what it left loaded, success or not: transient
   * objects after steps that load keys, sessions too after steps that start them; nothing after
   * steps that only read NV, PCRs or capabilities.
   */
  private step<T>(flush: Flush, body: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new CustosError('ERR_TPM_UNAVAILABLE', 'the TPM driver is closed'));
    const next = this.queue.then(async () => {
      let out: T;
      try {
        out = await body();
      } catch (e) {
        await this.flush(flush).catch(() => undefined);
        throw e;
      }
      await this.flush(flush);
      return out;
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async readAndRemove(path: string): Promise<Buffer> {
    try {
      return await readFile(path);
    } finally {
      await unlink(path).catch(() => undefined);
    }
  }

  /**
   * Reads the EK certificates from their NV indices (RSA 0x01c00002, P-384 0x01c00016), each
   * only if present, and cuts the NV padding after the DER certificate.
   * @throws ERR_EK_CERT_INVALID when an index holds something that is not a DER certificate;
   * ERR_TPM_UNAVAILABLE when the TPM cannot be reached.
   */
  async readEkCertificates(): Promise<EkCertificates> {
    const present = await this.nvIndices();
    const out: { rsa?: Buffer; ecc384?: Buffer } = {};
    for (const alg of ['rsa', 'ecc384'] as const) {
      const index = EK_CERT_NV_INDEX[alg];
      if (!present.includes(index)) continue;
      const raw = await this.step('none', async () => {
        const f = this.file(`ek-${alg}-cert.der`);
        await this.run('tpm2_nvread', [handleHex(index), '-o', f]);
        return this.readAndRemove(f);
      });
      out[alg] = trimCertificatePadding(raw);
    }
    return out;
  }

  /** NV indices defined in the TPM. */
  async nvIndices(): Promise<number[]> {
    const { stdout } = await this.step('none', () => this.run('tpm2_getcap', ['handles-nv-index']));
    return [...stdout.matchAll(/0x([0-9a-fA-F]{1,8})/g)].map((m) => parseInt(m[1]!, 16));
  }

  /** Persistent handles in use. */
  async persistentHandles(): Promise<number[]> {
    const { stdout } = await this.step('none', () => this.run('tpm2_getcap', ['handles-persistent']));
    return [...stdout.matchAll(/0x([0-9a-fA-F]{1,8})/g)].map((m) => parseInt(m[1]!, 16));
  }

  /**
   * Creates the EK from the default TCG template (`tpm2_createek`): RSA-2048 (template L-1) or
   * NIST P-384 (high-range template H-3, the one the 0x01c00016 certificate covers).
   * @throws ERR_TPM_COMMAND / ERR_TPM_UNAVAILABLE
   */
  async createEk(alg: EkAlg): Promise<EkObject> {
    if (alg !== 'rsa' && alg !== 'ecc384') throw new CustosError('ERR_BAD_REQUEST', `unknown EK type ${String(alg)}`);
    return this.step('objects', async () => {
      const ctx = this.file(`ek-${alg}.ctx`);
      const pub = this.file(`ek-${alg}.pub`);
      await this.run('tpm2_createek', ['-c', ctx, '-G', alg, '-u', pub, ...this.endorsementAuth]);
      const bytes = await readFile(pub);
      return { alg, context: ctx, public: bytes, name: objectName(parseTpm2bPublic(bytes)) };
    });
  }

  /**
   * Creates an AK under the EK with `tpm2_createak`, whose template is a restricted signing key
   * (fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, restricted, sign): RSA-2048
   * RSASSA-SHA256 or ECC P-256 ECDSA-SHA256.
   * @throws ERR_TPM_COMMAND / ERR_TPM_UNAVAILABLE
   */
  async createAk(ek: EkObject, alg: AkAlg): Promise<AkObject> {
    if (alg !== 'rsa' && alg !== 'ecc') throw new CustosError('ERR_BAD_REQUEST', `unknown AK type ${String(alg)}`);
    return this.step('all', async () => {
      const ctx = this.file(`ak-${alg}.ctx`);
      const pub = this.file(`ak-${alg}.pub`);
      const name = this.file(`ak-${alg}.name`);
      await this.run('tpm2_createak', ['-C', ek.context, '-c', ctx, '-G', alg, '-g', 'sha256', '-s', alg === 'rsa' ? 'rsassa' : 'ecdsa', '-u', pub, '-n', name, ...this.endorsementAuth]);
      const bytes = await readFile(pub);
      const computed = objectName(parseTpm2bPublic(bytes));
      const reported = await readFile(name);
      if (!computed.equals(reported)) throw new CustosError('ERR_TPM_COMMAND', 'tpm2_createak reported a Name that does not match the AK public area');
      return { alg, context: ctx, public: bytes, name: computed };
    });
  }

  /**
   * Makes the AK persistent at `handle` (owner hierarchy, authorized with the owner password file
   * when one is configured, else the empty password), evicting
   * whatever was persisted there before.
   * @throws ERR_BAD_REQUEST for a handle outside the persistent range; ERR_TPM_COMMAND
   */
  async persistAk(ak: AkObject, handle: number = DEFAULT_AK_HANDLE): Promise<number> {
    parsePersistentHandle(handle);
    if ((await this.persistentHandles()).includes(handle)) await this.evict(handle);
    await this.step('objects', () => this.run('tpm2_evictcontrol', ['-C', 'o', '-c', ak.context, ...this.ownerAuth, handleHex(handle)]));
    return handle;
  }

  /** Removes a persistent object. @throws ERR_TPM_COMMAND if there is none at `handle`. */
  async evict(handle: number): Promise<void> {
    parsePersistentHandle(handle);
    await this.step('none', () => this.run('tpm2_evictcontrol', ['-C', 'o', '-c', handleHex(handle), ...this.ownerAuth]));
  }

  /**
   * Reads the public area of a persistent object.
   * @throws ERR_TPM_COMMAND when nothing is persisted at `handle`
   */
  async readPublic(handle: number): Promise<{ public: Buffer; name: Buffer }> {
    return this.step('none', async () => {
      const pub = this.file('readpublic.pub');
      await this.run('tpm2_readpublic', ['-c', handleHex(handle), '-o', pub]);
      const bytes = await this.readAndRemove(pub);
      return { public: bytes, name: objectName(parseTpm2bPublic(bytes)) };
    });
  }

  private keyArg(key: KeyRef): string {
    return typeof key === 'number' ? handleHex(parsePersistentHandle(key)) : key.context;
  }

  /**
   * TPM2_ActivateCredential: recovers the secret the verifier sealed to this EK and AK Name.
   * An EK without userWithAuth (the RSA EK, policy A) is authorized by a policy session with
   * PolicySecret(TPM_RH_ENDORSEMENT) (TCG EK Credential Profile 2.0, §2.1.5); an EK with
   * userWithAuth (the P-384 high-range EK) by its empty password.
   * The secret goes through a 0600 file in the private folder, removed right after reading.
   * @throws ERR_TPM_MARSHAL for malformed blobs; ERR_TPM_COMMAND when the TPM refuses (e.g. a
   * credential for another EK or Name).
   */
  async activateCredential(ek: EkObject, ak: KeyRef, credentialBlob: Buffer, encryptedSecret: Buffer): Promise<Buffer> {
    const credFile = writeCredentialFile({ credentialBlob, encryptedSecret });
    const userWithAuth = parseTpm2bPublic(ek.public).objectAttributes.userWithAuth;
    return this.step('all', async () => {
      const cred = this.file('credential.bin');
      const out = this.file('secret.bin');
      await writeFile(cred, credFile, { mode: 0o600 });
      try {
        const args = ['-c', this.keyArg(ak), '-C', ek.context, '-i', cred, '-o', out];
        if (!userWithAuth) {
          const session = this.file('ek-policy.session');
          await this.run('tpm2_startauthsession', ['--policy-session', '-S', session]);
          // The endorsement password, if any, is PolicySecret's positional auth argument.
          await this.run('tpm2_policysecret', ['-S', session, '-c', 'e', ...this.endorsementAuth.slice(1)]);
          args.push('-P', `session:${session}`);
        }
        await this.run('tpm2_activatecredential', args);
        return await this.readAndRemove(out);
      } finally {
        await unlink(cred).catch(() => undefined);
        await unlink(out).catch(() => undefined);
      }
    });
  }

  /**
   * TPM2_Quote over `pcrList` (tpm2-tools syntax, e.g. `sha256:0,1,2,3,4,5,6,7`) with
   * `extraData` as qualifying data (not secret: a nonce or a hash), signed with SHA-256.
   * The PCR values come from `-o FILE -F values` and are split by the selection the TPM quoted.
   * @throws ERR_BAD_REQUEST for a bad list or extraData over 64 bytes; ERR_TPM_COMMAND;
   * ERR_TPM_MARSHAL when the quoted selection differs from the one asked for.
   */
  async quote(ak: KeyRef, pcrList: string, extraData: Buffer): Promise<QuoteOutput> {
    const wanted = parsePcrList(pcrList);
    if (extraData.length > MAX_QUALIFYING_DATA) throw new CustosError('ERR_BAD_REQUEST', `extraData must be at most ${MAX_QUALIFYING_DATA} bytes`);
    return this.step(typeof ak === 'number' ? 'none' : 'objects', async () => {
      const m = this.file('quote.attest');
      const s = this.file('quote.sig');
      const o = this.file('quote.pcrs');
      const args = ['-c', this.keyArg(ak), '-l', formatPcrList(wanted), '-g', 'sha256', '-m', m, '-s', s, '-o', o, '-F', 'values'];
      if (extraData.length > 0) args.push('-q', extraData.toString('hex'));
      await this.run('tpm2_quote', args);
      const quote = await this.readAndRemove(m);
      const signature = await this.readAndRemove(s);
      const values = await this.readAndRemove(o);
      const attest = parseTpmsAttest(quote);
      if (attest.attested.kind !== 'quote') throw new CustosError('ERR_TPM_MARSHAL', 'tpm2_quote did not produce a quote');
      const quoted = banksOfSelection(attest.attested.pcrSelect);
      if (!sameSelection(quoted, wanted)) throw new CustosError('ERR_TPM_MARSHAL', `the TPM quoted ${formatPcrList(quoted)} instead of ${formatPcrList(wanted)}`);
      return { quote, signature, pcrs: splitPcrValues(quoted, values) };
    });
  }

  /**
   * Reads PCR values (`tpm2_pcrread -o FILE -F values`).
   * @throws ERR_BAD_REQUEST for a bad list; ERR_TPM_COMMAND
   */
  async pcrRead(pcrList: string): Promise<PcrHexValues> {
    const wanted: PcrBank[] = parsePcrList(pcrList);
    return this.step('none', async () => {
      const o = this.file('pcrread.bin');
      await this.run('tpm2_pcrread', [formatPcrList(wanted), '-o', o, '-F', 'values']);
      return splitPcrValues(wanted, await this.readAndRemove(o));
    });
  }

  /**
   * Extends PCR `index` in each bank with H_bank(data) (TPM2_PCR_Extend: new = H(old ‖ digest)).
   * For demos and tests: changing a PCR changes the verdict.
   * @throws ERR_BAD_REQUEST for an index outside 0–23 or an unknown bank; ERR_TPM_COMMAND
   */
  async pcrExtend(index: number, data: Buffer, banks: readonly string[] = ['sha256']): Promise<Record<string, string>> {
    if (!Number.isInteger(index) || index < 0 || index > 23) throw new CustosError('ERR_BAD_REQUEST', 'the PCR index must be 0-23');
    if (banks.length === 0) throw new CustosError('ERR_BAD_REQUEST', 'no PCR bank given');
    const digests: Record<string, string> = {};
    for (const b of banks) {
      const h = tpmHashByNodeName(b);
      if (h === undefined) throw new CustosError('ERR_BAD_REQUEST', `unknown PCR bank "${b}"`);
      digests[h.nodeHash] = createHash(h.nodeHash).update(data).digest('hex');
    }
    const spec = `${index}:` + Object.entries(digests).map(([b, d]) => `${b}=${d}`).join(',');
    await this.step('none', () => this.run('tpm2_pcrextend', [spec]));
    return digests;
  }
}
