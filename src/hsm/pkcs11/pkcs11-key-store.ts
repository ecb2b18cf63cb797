import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import type { EventLoopUtilization } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import pkcs11js from 'pkcs11js';
import { CustosError, isCustosError } from '../../lib/errors.js';
import type { HsmHealth, KeyObjectInfo, KeySpec, KeyStore } from '../key-store.js';
import { keyTypeInfo, type HashName, type KeyType, type SignScheme } from '../key-types.js';
import { formatPkcs11Uri } from '../pkcs11-uri.js';
import { AUTH_FAILED, COPY_REFUSED, HANDLE_STALE, NOT_LOGGED_IN, SESSION_GONE, SIGNATURE_BAD, TOKEN_GONE, ckrError, ckrName } from './ckr.js';
import { WORKER_CONSTS, keyPairTemplates, keyTypeOf, secretKeyTemplate, signInput, signMechanisms, spkiFromToken } from './mechanisms.js';
import type { FromWorker, ObjectAttrs, WorkerFailure, WorkerInit, WorkerOp } from './protocol.js';
import { tokenWorkerMain } from './token-worker.js';
import { CallTable } from '../../lib/call-table.js';

/** Minimal logger shape (pino fits). Messages never carry the PIN. */
export interface HsmLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface Pkcs11KeyStoreOptions {
  /** Path of the PKCS#11 module (.so). */
  module: string;
  /** CKA label of the token; slots are found by it (SoftHSM2 slot ids are random). */
  tokenLabel: string;
  /** User PIN, read by the caller from a file or env. Never logged, never in an error. */
  pin: string;
  /** Worker threads, each with its own session (default: min(2, CPUs)). */
  workers?: number;
  /** Operations handed to workers at once, over all workers (default 64 per worker). */
  poolSize?: number;
  /** Operations allowed to wait beyond `poolSize` before new ones are refused (default 10,000). */
  maxQueue?: number;
  logger?: HsmLogger;
  /** Called after every operation, for metrics. */
  onOp?: (op: KeyStoreOp, durationMs: number, ok: boolean) => void;
  /** First wait after a refused PIN; doubles per refusal up to `authBackoffMaxMs` (defaults 1 s / 60 s). */
  authBackoffMs?: number;
  authBackoffMaxMs?: number;
  /** Minimum time between two re-initialization attempts while the token is away (default 200 ms). */
  recoveryIntervalMs?: number;
  /**
   * When false (default), {@link openPkcs11KeyStore} rejects if the token cannot be used at start.
   * When true it resolves anyway; calls fail with ERR_HSM_UNAVAILABLE until the token is there.
   */
  lazy?: boolean;
  /**
   * Sign with session copies of the private keys, made inside the token with C_CopyObject
   * (`on`), with the token objects (`off`), or `auto` (default): copies when the module is
   * SoftHSM2, whose file store re-reads a token object's file on every use. See hsm/README.md.
   */
  sessionCopies?: SessionCopies;
  /**
   * How often each copy's token object is checked while the copy is in use (default 100 ms), and
   * after how long unused a copy is destroyed (default 10 s).
   */
  copyCheckMs?: number;
  copyIdleMs?: number;
}

export type SessionCopies = 'auto' | 'on' | 'off';

export type KeyStoreOp =
  | 'generateKeyPair' | 'generateSecretKey' | 'findKey' | 'listKeys' | 'getPublicKey' | 'sign' | 'verify'
  | 'encrypt' | 'decrypt' | 'randomBytes' | 'destroy' | 'health';

export interface Pkcs11Stats {
  opsTotal: Partial<Record<KeyStoreOp, number>>;
  opErrors: Partial<Record<KeyStoreOp, number>>;
  /** Operations handed to workers and not answered yet. */
  inFlight: number;
  /** Operations waiting for a free slot. */
  queued: number;
  workers: number;
  /** Operations answered by each worker (workers are filled in order; see LANE_SPILL). */
  perWorker: number[];
  /** Successful re-initializations after the token went away. */
  recoveries: number;
  /** Re-initializations to see objects the module had lost track of (see {@link Pkcs11KeyStore}'s `seeing`). */
  viewRefreshes: number;
  /** Whether signatures use session copies of the private keys (`sessionCopies` resolved). */
  sessionCopies: boolean;
}

interface Pending {
  n: number;
  o: WorkerOp;
  op: KeyStoreOp;
  cost: number;
  start: number;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

interface Lane {
  worker: Worker;
  /** Operations sent to this worker and not answered yet, by call number (see CallTable: not a Map). */
  inflight: CallTable<Pending>;
  load: number;
  out: Array<{ n: number; o: WorkerOp }>;
  /** The worker's event-loop utilization at the last sample, and its smoothed share of busy time. */
  elu: EventLoopUtilization;
  util: number;
  /** Operations this worker answered (for stats). */
  answered: number;
}

// PKCS#11 v2.40 §5.4: C_Initialize/C_Finalize are per process, so stores sharing a module in
// one process share them too: finalize only when the last one closes.
const moduleUsers = new Map<string, number>();

/**
 * Cost units of an operation in a lane's load: an ECDSA P-256 signature is 1 (about 37 µs in
 * SoftHSM2 here), an RSA signature about 15 of those (rsa-2048: 1,850/s against 27,000/s). An
 * ECDSA verification counts 2, an RSA one 1; everything else 1 unless its call says otherwise.
 */
const RSA_SIGN_COST = 15;
/** A lane takes new operations first until it holds this much work (about 2 ms of ECDSA). */
const LANE_SPILL = 48;
/**
 * The next worker joins only when the one before it is busy: its event-loop utilization, smoothed
 * over about 100 ms, at least this share. A second thread helps when the token work is the
 * bottleneck (RSA), not when the main thread is (ECDSA over HTTP on two cores, where it only adds
 * wake-ups, messages and another thread competing for the cores). Utilization counts wall time,
 * so a worker that the scheduler keeps off a saturated core looks busier than it is: the
 * threshold is high and smoothed (samples of one ECDSA worker at 14k signatures/s: 0.7–0.85).
 */
const LANE_BUSY = 0.9;
const LANE_SAMPLE_MS = 20;
/** Weight of the newest sample in a lane's smoothed utilization (about 100 ms of memory). */
const LANE_EWMA = 0.2;

const ID_RE = /^[0-9a-f]{2,128}$/;

/** The shortest time between two re-readings of the token caused by a missing object (see `seeing`). */
const VIEW_REFRESH_MS = 1_000;

/** SoftHSM2 (any version): the module whose file store makes session copies worth it. */
function isSoftHsm(m: pkcs11js.PKCS11): boolean {
  try {
    return /^SoftHSM/i.test(m.C_GetInfo().manufacturerID.trim());
  } catch {
    return false;
  }
}

/** A Buffer view of a pooled slab would make postMessage copy the whole slab: send only the bytes. */
function compact(b: Buffer): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b : new Uint8Array(b);
}

function checkId(id: string): void {
  if (typeof id !== 'string' || !ID_RE.test(id) || id.length % 2 !== 0) {
    throw new CustosError('ERR_BAD_REQUEST', 'key id must be lowercase hex');
  }
}

/**
 * Opens a PKCS#11-backed KeyStore: loads the module, calls C_Initialize with CKF_OS_LOCKING_OK on
 * the main thread, then starts worker threads that each hold one logged-in session.
 *
 * @throws CustosError ERR_HSM_UNAVAILABLE (module missing, no token with the label) or
 *   ERR_HSM_AUTH (PIN refused), unless `lazy` is set.
 */
export async function openPkcs11KeyStore(options: Pkcs11KeyStoreOptions): Promise<Pkcs11KeyStore> {
  const store = new Pkcs11KeyStore(options);
  for (let attempt = 1; ; attempt++) {
    try {
      await store.start();
      return store;
    } catch (e) {
      // SoftHSM2 reads its tokens once, at C_Initialize, and a token whose file another process
      // is rewriting at that moment (its login does) reads as no token at all: one start in
      // about ten of two custos processes starting together on one token found "no token
      // labelled …". A token that is not there at start is looked for again (re-initializing
      // the module) a few times over 0.6 s before the start counts as failed.
      if (attempt < START_ATTEMPTS && isCustosError(e) && e.details?.part === 'token') {
        await new Promise((r) => setTimeout(r, 100 * attempt));
        continue;
      }
      if (options.lazy) {
        options.logger?.warn({ code: isCustosError(e) ? e.code : 'ERR_HSM', part: isCustosError(e) ? e.details?.part : undefined, reason: e instanceof Error ? e.message : String(e) }, 'HSM not ready at start; will retry on use');
        return store;
      }
      await store.close();
      throw e;
    }
  }
}

/** Tries to find the token at start (see openPkcs11KeyStore). */
const START_ATTEMPTS = 4;

/**
 * KeyStore over any PKCS#11 v2.40 module. Operations run on worker threads (see token-worker.ts);
 * the main thread only queues requests and maps results. Recovers without restart from closed
 * sessions, logouts, stale object handles (re-found by CKA_ID) and a token that went away.
 */
export class Pkcs11KeyStore implements KeyStore {
  private readonly opts: Required<Omit<Pkcs11KeyStoreOptions, 'logger' | 'onOp'>> & Pick<Pkcs11KeyStoreOptions, 'logger' | 'onOp'>;
  private readonly lanes: Lane[] = [];
  private readonly queue: Pending[] = [];
  private readonly types = new Map<string, KeyType>();
  private readonly opsTotal: Partial<Record<KeyStoreOp, number>> = {};
  private readonly opErrors: Partial<Record<KeyStoreOp, number>> = {};
  private main: pkcs11js.PKCS11 | null = null;
  private seq = 0;
  private flushScheduled = false;
  private closed = false;
  private broken = true;
  private brokenPart: 'module' | 'token' | 'login' | 'session' = 'module';
  private recovering: Promise<void> | null = null;
  private lastRecoveryAt = -Infinity;
  private recoveries = 0;
  private viewRefreshes = 0;
  private viewRefreshedAt = -Infinity;
  private viewRefreshing: Promise<void> | null = null;
  private paused = false;
  private idleWaiters: Array<() => void> = [];
  private authFailures = 0;
  private authBlockedUntil = 0;
  /** `sessionCopies` resolved against the module when it is first loaded. */
  private copies = false;

  constructor(options: Pkcs11KeyStoreOptions) {
    const workers = Math.max(1, Math.floor(options.workers ?? Math.min(2, availableParallelism())));
    this.opts = {
      module: options.module,
      tokenLabel: options.tokenLabel,
      pin: options.pin,
      workers,
      poolSize: Math.max(workers, Math.floor(options.poolSize ?? 64 * workers)),
      maxQueue: options.maxQueue ?? 10_000,
      authBackoffMs: options.authBackoffMs ?? 1_000,
      authBackoffMaxMs: options.authBackoffMaxMs ?? 60_000,
      recoveryIntervalMs: options.recoveryIntervalMs ?? 200,
      lazy: options.lazy ?? false,
      sessionCopies: options.sessionCopies ?? 'auto',
      copyCheckMs: Math.max(1, options.copyCheckMs ?? 100),
      copyIdleMs: Math.max(1, options.copyIdleMs ?? 10_000),
      logger: options.logger,
      onOp: options.onOp,
    };
  }

  /** Loads and initializes the module, starts the workers and logs in. Used by {@link openPkcs11KeyStore}. */
  async start(): Promise<void> {
    this.lastRecoveryAt = Date.now();
    this.recovering = this.connect();
    try {
      await this.recovering;
    } finally {
      this.recovering = null;
    }
  }

  // ---- KeyStore --------------------------------------------------------------------------

  async generateKeyPair(spec: KeySpec): Promise<KeyObjectInfo> {
    checkId(spec.id);
    const info = keyTypeInfo(spec.type);
    if (info.kind === 'aes') throw new CustosError('ERR_KEY_TYPE', 'not an asymmetric key type');
    const t = keyPairTemplates(info, spec.id, spec.label);
    await this.refuseTaken(spec.id);
    await this.call('generateKeyPair', { op: 'genPair', id: spec.id, mech: t.mech, pub: t.pub, priv: t.priv }, info.kind === 'rsa' ? 1000 : 20);
    return this.mustFind(spec.id);
  }

  async generateSecretKey(spec: KeySpec): Promise<KeyObjectInfo> {
    checkId(spec.id);
    const info = keyTypeInfo(spec.type);
    const t = secretKeyTemplate(info, spec.id, spec.label);
    await this.refuseTaken(spec.id);
    await this.call('generateSecretKey', { op: 'genSecret', id: spec.id, mech: t.mech, tpl: t.tpl }, 5);
    return this.mustFind(spec.id);
  }

  async findKey(id: string): Promise<KeyObjectInfo | null> {
    checkId(id);
    const objs = await this.seeing(async () => (await this.call('findKey', { op: 'find', id })) as ObjectAttrs[], (o) => o.length === 0, true);
    return this.describe(objs);
  }

  /**
   * Every private or secret key on the token whose type custos knows (EC P-256/P-384, RSA
   * 2048/3072, AES-256), grouped by CKA_ID; objects of other types are left out.
   */
  async listKeys(expected: readonly string[] = []): Promise<KeyObjectInfo[]> {
    const lacks = (objs: ObjectAttrs[]): boolean => {
      const ids = new Set(objs.map((o) => o.id));
      return expected.some((id) => !ids.has(id));
    };
    const objs = await this.seeing(async () => (await this.call('listKeys', { op: 'list' })) as ObjectAttrs[], lacks, true);
    const byId = new Map<string, ObjectAttrs[]>();
    for (const o of objs) byId.set(o.id, [...(byId.get(o.id) ?? []), o]);
    const out: KeyObjectInfo[] = [];
    for (const group of byId.values()) {
      const k = this.describe(group);
      if (k) out.push(k);
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  async getPublicKey(id: string): Promise<Buffer> {
    checkId(id);
    const type = await this.typeOf(id);
    const info = keyTypeInfo(type);
    if (info.kind === 'aes') throw new CustosError('ERR_KEY_PURPOSE', 'a secret key has no public key');
    const v = (await this.seeing(() => this.call('getPublicKey', { op: 'pub', id }))) as Parameters<typeof spkiFromToken>[0];
    return spkiFromToken(v, info);
  }

  async sign(id: string, scheme: SignScheme, hash: HashName, digest: Buffer): Promise<Buffer> {
    checkId(id);
    const input = signInput(scheme, hash, digest);
    const o: WorkerOp = { op: 'sign', id, mech: input.mech, data: compact(input.data) };
    const sig = (await this.seeing(() => this.call('sign', o, scheme === 'ecdsa' ? 1 : RSA_SIGN_COST))) as Uint8Array;
    return Buffer.from(sig.buffer, sig.byteOffset, sig.byteLength);
  }

  async verify(id: string, scheme: SignScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean> {
    checkId(id);
    const input = signInput(scheme, hash, digest);
    const o: WorkerOp = { op: 'verify', id, mech: input.mech, data: compact(input.data), sig: compact(signature) };
    return (await this.seeing(() => this.call('verify', o, scheme === 'ecdsa' ? 2 : 1))) as boolean;
  }

  async encrypt(id: string, plaintext: Buffer, aad: Buffer): Promise<{ iv: Buffer; ciphertext: Buffer }> {
    checkId(id);
    const o: WorkerOp = { op: 'encrypt', id, data: compact(plaintext), aad: compact(aad) };
    const r = (await this.seeing(() => this.call('encrypt', o))) as { iv: Uint8Array; ct: Uint8Array };
    return { iv: Buffer.from(r.iv), ciphertext: Buffer.from(r.ct) };
  }

  async decrypt(id: string, iv: Buffer, ciphertext: Buffer, aad: Buffer): Promise<Buffer> {
    checkId(id);
    // GCM (NIST SP 800-38D §5.2.1.1): custos IVs are 96 bits; a shorter input cannot even hold a tag.
    if (iv.length !== 12 || ciphertext.length < 16) throw new CustosError('ERR_DECRYPT');
    const o: WorkerOp = { op: 'decrypt', id, iv: compact(iv), data: compact(ciphertext), aad: compact(aad) };
    const r = (await this.seeing(() => this.call('decrypt', o))) as Uint8Array;
    return Buffer.from(r);
  }

  async randomBytes(length: number): Promise<Buffer> {
    if (!Number.isInteger(length) || length < 1 || length > 65_536) {
      throw new CustosError('ERR_BAD_REQUEST', 'random length must be 1..65536');
    }
    const r = (await this.call('randomBytes', { op: 'random', length })) as Uint8Array;
    return Buffer.from(r);
  }

  async destroy(id: string): Promise<void> {
    checkId(id);
    // "Nothing to destroy" must come from a view that holds every process's objects: otherwise
    // a key another process made would be reported destroyed and stay on the token.
    await this.seeing(async () => (await this.call('destroy', { op: 'destroy', id })) as number, (n) => n === 0, true);
    this.types.delete(id);
    // Other workers may still hold handles of the destroyed objects; a module may reuse handles.
    await Promise.all(this.lanes.map((_, i) => this.control(i, { op: 'forget', id }).catch(() => undefined)));
  }

  async health(): Promise<HsmHealth> {
    if (this.closed) return { ok: false, part: 'module', code: 'ERR_HSM_UNAVAILABLE', reason: 'the key store is closed' };
    if (Date.now() < this.authBlockedUntil) {
      return { ok: false, part: 'login', code: 'ERR_HSM_AUTH', reason: 'the token refused the PIN; waiting before the next login' };
    }
    try {
      await this.call('health', { op: 'health' });
      const inUse = this.lanes.filter((l) => l.inflight.size > 0).length;
      return { ok: true, module: this.opts.module, tokenLabel: this.opts.tokenLabel, sessionsInUse: inUse, sessionsIdle: this.lanes.length - inUse };
    } catch (e) {
      const code = isCustosError(e, 'ERR_HSM_AUTH') ? 'ERR_HSM_AUTH' : 'ERR_HSM_UNAVAILABLE';
      const part = isCustosError(e) && typeof e.details?.part === 'string' ? (e.details.part as 'module' | 'token' | 'login' | 'session') : this.brokenPart;
      return { ok: false, part, code, reason: e instanceof Error ? e.message : 'unknown failure' };
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.queue.splice(0)) p.reject(new CustosError('ERR_HSM_UNAVAILABLE', 'the key store is closed'));
    await this.idle();
    await Promise.all(this.lanes.map((_, i) => this.control(i, { op: 'drop' }).catch(() => undefined)));
    await Promise.all(this.lanes.splice(0).map((l) => l.worker.terminate()));
    if (this.main) {
      const users = (moduleUsers.get(this.opts.module) ?? 1) - 1;
      if (users <= 0) {
        moduleUsers.delete(this.opts.module);
        try {
          this.main.C_Finalize();
        } catch {
          // Already finalized by a recovery that failed: nothing to release.
        }
      } else moduleUsers.set(this.opts.module, users);
      this.main = null;
    }
  }

  // ---- metrics and test hooks -------------------------------------------------------------

  /** Counters for metrics (the HTTP layer exports them to Prometheus). */
  stats(): Pkcs11Stats {
    return {
      opsTotal: { ...this.opsTotal },
      opErrors: { ...this.opErrors },
      inFlight: this.lanes.reduce((n, l) => n + l.inflight.size, 0),
      queued: this.queue.length,
      workers: this.lanes.length,
      perWorker: this.lanes.map((l) => l.answered),
      recoveries: this.recoveries,
      viewRefreshes: this.viewRefreshes,
      sessionCopies: this.copies,
    };
  }

  /**
   * Test hook: C_CloseAllSessions on the token (or C_Logout when `logout`), behind the pool's
   * back, to prove that the next operations recover.
   */
  async disruptSessions(how: 'closeAll' | 'logout'): Promise<void> {
    await this.control(0, { op: how === 'closeAll' ? 'closeAllSessions' : 'logout' });
  }

  // ---- internals --------------------------------------------------------------------------

  /**
   * Runs an operation on an object, and again once on a fresh view of the token when the answer
   * is that no object has its id (`missing` for answers that are not errors).
   *
   * Why: SoftHSM2 (2.6) loses track of other processes' objects. Its token keeps a generation
   * counter in a file and re-reads the object directory only when the counter moved since it
   * last looked; but a process that creates or destroys an object itself increments the counter
   * from its value on disk and takes the result as seen (Generation::commit). A change another
   * process made just before is then never indexed until the module is initialized again: a key
   * another custos process generated meanwhile stays missing here, every signature with it fails,
   * and a destroy finds nothing and would report success while the key stays on the token
   * (reproduced by test/integration/hsm/pkcs11-recovery.softhsm.test.ts).
   *
   * The fresh view is a re-initialization of the module (the token-recovery path: operations
   * pause, the sessions are opened again). It is done at most once per VIEW_REFRESH_MS for
   * answers that only fail a request, so an id that is really missing cannot keep the token
   * re-initializing; `always` (destroy, find) refreshes whenever no refresh happened since the
   * operation started, because there a wrong "missing" would be recorded as a fact.
   */
  private seeing<T>(run: () => Promise<T>, missing?: (v: T) => boolean, always = false): Promise<T> {
    const epoch = this.viewRefreshes;
    const again = async (first: () => T): Promise<T> => ((await this.refreshView(epoch, always)) ? run() : first());
    return run().then(
      missing === undefined ? undefined : (v) => (missing(v) ? again(() => v) : v),
      (e: unknown) => {
        if (!isCustosError(e, 'ERR_HSM_OBJECT_NOT_FOUND')) throw e;
        return again(() => {
          throw e;
        });
      },
    );
  }

  /**
   * Re-initializes the module so that it reads the token's objects again, unless that happened
   * since `epoch` (then the caller just tries again). False when no refresh is allowed now.
   * @throws CustosError ERR_HSM_UNAVAILABLE when the re-initialization fails (`always` only)
   */
  private async refreshView(epoch: number, always: boolean): Promise<boolean> {
    if (this.viewRefreshes !== epoch) return true;
    if (!this.viewRefreshing) {
      if (!always && Date.now() - this.viewRefreshedAt < VIEW_REFRESH_MS) return false;
      this.viewRefreshedAt = Date.now();
      this.opts.logger?.info({ tokenLabel: this.opts.tokenLabel }, 'no object with a requested id: reading the token again');
      this.viewRefreshing = (async () => {
        // Waits for a recovery under way, then re-initializes: `recover` does nothing when the
        // store is not broken, and refuses when the last attempt was too recent.
        await this.recovering?.catch(() => undefined);
        this.broken = true;
        this.brokenPart = 'token';
        this.lastRecoveryAt = -Infinity;
        await this.recover();
        this.viewRefreshes++;
      })().finally(() => {
        this.viewRefreshing = null;
      });
    }
    try {
      await this.viewRefreshing;
      return true;
    } catch (e) {
      if (always) throw e;
      return false;
    }
  }

  private async refuseTaken(id: string): Promise<void> {
    const objs = (await this.call('findKey', { op: 'find', id })) as ObjectAttrs[];
    if (objs.length > 0) throw new CustosError('ERR_KEY_EXISTS', 'the token holds objects with this id');
  }

  private async mustFind(id: string): Promise<KeyObjectInfo> {
    const k = await this.findKey(id);
    if (!k) throw new CustosError('ERR_HSM', 'the token did not keep the generated key');
    return k;
  }

  private describe(objs: ObjectAttrs[]): KeyObjectInfo | null {
    const key = objs.find((o) => o.cls === 'private') ?? objs.find((o) => o.cls === 'secret');
    if (!key) return null;
    const pub = objs.find((o) => o.cls === 'public');
    const type = keyTypeOf(key) ?? (pub ? keyTypeOf(pub) : null);
    if (!type) return null;
    this.types.set(key.id, type);
    return {
      id: key.id,
      label: key.label,
      type,
      uri: formatPkcs11Uri({ token: this.opts.tokenLabel, id: key.id, object: key.label, type: key.cls === 'secret' ? 'secret' : 'private' }),
      sensitive: key.sensitive === true,
      extractable: key.extractable !== false,
    };
  }

  private async typeOf(id: string): Promise<KeyType> {
    const known = this.types.get(id);
    if (known) return known;
    const k = await this.findKey(id);
    if (!k) throw new CustosError('ERR_HSM_OBJECT_NOT_FOUND');
    return k.type;
  }

  private count(op: KeyStoreOp, ok: boolean, start: number): void {
    this.opsTotal[op] = (this.opsTotal[op] ?? 0) + 1;
    if (!ok) this.opErrors[op] = (this.opErrors[op] ?? 0) + 1;
    this.opts.onOp?.(op, performance.now() - start, ok);
  }

  /** Queues one operation for the workers, handling auth back-off and token recovery first. */
  private async call(op: KeyStoreOp, o: WorkerOp, cost = 1): Promise<unknown> {
    const start = performance.now();
    try {
      if (this.closed) throw new CustosError('ERR_HSM_UNAVAILABLE', 'the key store is closed');
      if (Date.now() < this.authBlockedUntil) {
        throw new CustosError('ERR_HSM_AUTH', 'the token refused the PIN; waiting before the next login', { details: { part: 'login' } });
      }
      if (this.broken) await this.recover();
      if (this.queue.length >= this.opts.maxQueue) throw new CustosError('ERR_HSM_UNAVAILABLE', 'too many HSM operations waiting');
      const v = await new Promise((resolve, reject) => {
        this.queue.push({ n: ++this.seq, o, op, cost, start, resolve, reject });
        this.pump();
      });
      this.count(op, true, start);
      return v;
    } catch (e) {
      this.count(op, false, start);
      throw e;
    }
  }

  private pump(): void {
    if (this.paused) return;
    this.sampleLanes();
    let inflight = 0;
    for (const l of this.lanes) inflight += l.inflight.size;
    const perLane = Math.max(1, Math.ceil(this.opts.poolSize / this.lanes.length));
    while (this.queue.length > 0 && inflight < this.opts.poolSize && this.lanes.length > 0) {
      // Fill first: the first lane with less than LANE_SPILL of work takes the operation, else
      // the least loaded lane that is open. A lane after another one is open only when that one
      // is busy (see LANE_BUSY) or holds a lot of work (an RSA key generation, a queue of RSA
      // signatures). One worker thus gets bigger batches (one message and one wake-up for more
      // operations, fewer threads competing for the cores), and the next one joins when the
      // token work is what falls behind. A lane holds at most its share of poolSize; what finds
      // no lane waits here.
      let lane: Lane | undefined;
      for (const l of this.lanes) {
        const open = l.inflight.size < perLane;
        if (open && l.load < LANE_SPILL) {
          lane = l;
          break;
        }
        if (open && (!lane || l.load < lane.load)) lane = l;
        if (l.util < LANE_BUSY && l.load < LANE_SPILL * 4) break;
      }
      if (lane === undefined) break;
      const p = this.queue.shift() as Pending;
      lane.inflight.add(p.n, p);
      lane.load += p.cost;
      lane.out.push({ n: p.n, o: p.o });
      inflight++;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Batch everything queued during this turn of the event loop into one message per worker:
      // one postMessage per batch instead of per operation keeps main-thread cost per sign low.
      setImmediate(() => {
        this.flushScheduled = false;
        for (const l of this.lanes) {
          if (l.out.length > 0) l.worker.postMessage({ t: 'batch', ops: l.out.splice(0) });
        }
      });
    }
  }

  #lastLaneSample = 0;

  /** Refreshes each lane's smoothed utilization from its worker's event loop, at most every LANE_SAMPLE_MS. */
  private sampleLanes(): void {
    if (this.lanes.length < 2) return;
    const now = performance.now();
    if (now - this.#lastLaneSample < LANE_SAMPLE_MS) return;
    this.#lastLaneSample = now;
    for (const l of this.lanes) {
      const elu = l.worker.performance.eventLoopUtilization();
      const u = l.worker.performance.eventLoopUtilization(elu, l.elu).utilization;
      l.util = l.util * (1 - LANE_EWMA) + u * LANE_EWMA;
      l.elu = elu;
    }
  }

  private onResults(lane: Lane, msg: FromWorker): void {
    if (msg.t !== 'results') return;
    for (const { n, r } of msg.r) {
      const p = lane.inflight.take(n);
      if (!p) continue;
      lane.load -= p.cost;
      lane.answered++;
      if (r.ok) {
        if (this.authFailures > 0) this.authFailures = 0;
        p.resolve(r.v);
      } else p.reject(this.failure(r, p.op));
    }
    if (this.lanes.every((l) => l.inflight.size === 0)) for (const w of this.idleWaiters.splice(0)) w();
    this.pump();
  }

  /** Turns a worker failure into a CustosError and updates the store state (broken, back-off). */
  private failure(r: WorkerFailure, op: string): CustosError {
    if ('kind' in r) {
      switch (r.kind) {
        case 'notfound':
          return new CustosError('ERR_HSM_OBJECT_NOT_FOUND', undefined, { details: { part: 'token' } });
        case 'purpose':
          return new CustosError('ERR_KEY_PURPOSE', r.detail);
        case 'notoken':
          this.markBroken('token');
          return new CustosError('ERR_HSM_UNAVAILABLE', `no token labelled ${JSON.stringify(this.opts.tokenLabel)}`, { details: { part: 'token' } });
        default:
          this.markBroken('module');
          return new CustosError('ERR_HSM_UNAVAILABLE', 'the PKCS#11 module failed', { details: { part: 'module' }, cause: new Error(r.detail) });
      }
    }
    const part = r.gone ? 'token' : AUTH_FAILED.has(r.ckr) || NOT_LOGGED_IN.has(r.ckr) ? 'login' : SESSION_GONE.has(r.ckr) ? 'session' : undefined;
    if (r.gone) this.markBroken('token');
    if (AUTH_FAILED.has(r.ckr)) {
      this.authFailures++;
      const wait = Math.min(this.opts.authBackoffMs * 2 ** (this.authFailures - 1), this.opts.authBackoffMaxMs);
      this.authBlockedUntil = Date.now() + wait;
      this.opts.logger?.warn({ ckr: ckrName(r.ckr), waitMs: wait }, 'HSM login refused; backing off');
    }
    const err = ckrError(r.ckr, op, r.fn, r.gone);
    return part ? new CustosError(err.code, err.message, { details: { ...err.details, part } }) : err;
  }

  private markBroken(part: 'module' | 'token' | 'login' | 'session'): void {
    if (!this.broken) this.opts.logger?.warn({ part, tokenLabel: this.opts.tokenLabel }, 'HSM token unavailable');
    this.broken = true;
    this.brokenPart = part;
  }

  private idle(): Promise<void> {
    if (this.lanes.every((l) => l.inflight.size === 0)) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Sends one operation straight to one worker, bypassing the queue (recovery and control). */
  private control(i: number, o: WorkerOp): Promise<unknown> {
    const lane = this.lanes[i];
    if (!lane) return Promise.reject(new CustosError('ERR_HSM_UNAVAILABLE', 'no worker', { details: { part: 'module' } }));
    return new Promise((resolve, reject) => {
      const n = ++this.seq;
      lane.inflight.add(n, { n, o, op: 'health', cost: 0, start: performance.now(), resolve, reject });
      lane.worker.postMessage({ t: 'batch', ops: [{ n, o }] });
    });
  }

  /** Waits for a running recovery, or starts one unless the last attempt was too recent. */
  private async recover(): Promise<void> {
    if (!this.recovering) {
      if (Date.now() - this.lastRecoveryAt < this.opts.recoveryIntervalMs) {
        throw new CustosError('ERR_HSM_UNAVAILABLE', 'the HSM token is unavailable', { details: { part: this.brokenPart } });
      }
      this.lastRecoveryAt = Date.now();
      this.recovering = this.connect().finally(() => {
        this.recovering = null;
      });
    }
    await this.recovering;
  }

  /**
   * (Re)connects: loads the module on the main thread if needed, starts workers one by one,
   * re-initializes the module when the token had gone away, and logs in.
   */
  private async connect(): Promise<void> {
    this.paused = true;
    try {
      await this.idle();
      if (!this.main) {
        const m = new pkcs11js.PKCS11();
        try {
          m.load(this.opts.module);
        } catch (e) {
          this.brokenPart = 'module';
          throw new CustosError('ERR_HSM_UNAVAILABLE', 'the PKCS#11 module could not be loaded', { details: { part: 'module' }, cause: e });
        }
        try {
          // Never a NULL C_Initialize: SoftHSM2 then runs without mutexes and crashes under
          // concurrent sessions (RIG-FACTS).
          m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
        } catch (e) {
          if ((e as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
            this.brokenPart = 'module';
            throw new CustosError('ERR_HSM_UNAVAILABLE', 'C_Initialize failed', { details: { part: 'module' }, cause: e });
          }
        }
        this.main = m;
        this.copies = this.opts.sessionCopies === 'on' || (this.opts.sessionCopies === 'auto' && isSoftHsm(m));
        moduleUsers.set(this.opts.module, (moduleUsers.get(this.opts.module) ?? 0) + 1);
      }
      if (this.lanes.length === 0) {
        // One after the other: each worker's C_Initialize must only ever see an initialized module.
        for (let i = 0; i < this.opts.workers; i++) this.lanes.push(await this.spawn());
      } else if (this.brokenPart === 'token' || this.brokenPart === 'module') {
        await this.control(0, { op: 'reinit' });
        for (let i = 1; i < this.lanes.length; i++) await this.control(i, { op: 'drop' });
        this.recoveries++;
      }
      await this.control(0, { op: 'connect' });
      this.broken = false;
      this.opts.logger?.info({ tokenLabel: this.opts.tokenLabel, workers: this.lanes.length, sessionCopies: this.copies }, 'HSM token ready');
    } catch (e) {
      // Remember what failed so the next attempt does only what is needed: a refused login or a
      // lost session needs a new login, not a re-initialized module.
      const part = isCustosError(e) ? e.details?.part : undefined;
      if (part === 'module' || part === 'token' || part === 'login' || part === 'session') this.brokenPart = part;
      throw e;
    } finally {
      this.paused = false;
      this.pump();
    }
  }

  private spawn(): Promise<Lane> {
    const init: WorkerInit = {
      pkcs11Path: createRequire(import.meta.url).resolve('pkcs11js'),
      module: this.opts.module,
      tokenLabel: this.opts.tokenLabel,
      pin: this.opts.pin,
      consts: WORKER_CONSTS,
      mechs: signMechanisms(),
      codes: {
        sessionGone: [...SESSION_GONE],
        handleStale: [...HANDLE_STALE],
        notLoggedIn: [...NOT_LOGGED_IN],
        tokenGone: [...TOKEN_GONE],
        signatureBad: [...SIGNATURE_BAD],
        copyRefused: [...COPY_REFUSED],
      },
      sessionCopies: this.copies,
      copyCheckMs: this.opts.copyCheckMs,
      copyIdleMs: this.opts.copyIdleMs,
    };
    // The worker body travels as source text so the same code runs from the TypeScript sources
    // (tests) and from the build output; see tokenWorkerMain.
    const source =
      `const { parentPort, workerData } = require('node:worker_threads');\n` +
      `const pkcs11js = require(workerData.pkcs11Path);\n` +
      `(${tokenWorkerMain.toString()})({ parentPort, workerData, pkcs11js });\n`;
    const worker = new Worker(source, { eval: true, workerData: init, name: 'custos-pkcs11' });
    const lane: Lane = { worker, inflight: new CallTable<Pending>(), load: 0, out: [], elu: worker.performance.eventLoopUtilization(), util: 0, answered: 0 };
    return new Promise((resolve, reject) => {
      const onError = (e: unknown): void => reject(new CustosError('ERR_HSM_UNAVAILABLE', 'the PKCS#11 worker failed to start', { details: { part: 'module' }, cause: e }));
      worker.once('error', onError);
      worker.once('message', (m: FromWorker) => {
        worker.off('error', onError);
        if (m.t !== 'ready') return reject(new CustosError('ERR_HSM_UNAVAILABLE', 'the PKCS#11 worker did not start'));
        worker.on('message', (msg: FromWorker) => this.onResults(lane, msg));
        worker.on('error', (e) => this.onWorkerDeath(lane, e));
        worker.on('exit', () => this.onWorkerDeath(lane, new Error('worker exited')));
        resolve(lane);
      });
    });
  }

  private onWorkerDeath(lane: Lane, cause: unknown): void {
    const i = this.lanes.indexOf(lane);
    if (i === -1) return;
    this.lanes.splice(i, 1);
    for (const [, p] of lane.inflight.drain()) p.reject(new CustosError('ERR_HSM_UNAVAILABLE', 'the PKCS#11 worker stopped', { details: { part: 'module' }, cause }));
    if (!this.closed) {
      this.opts.logger?.warn({ workers: this.lanes.length }, 'PKCS#11 worker stopped');
      if (this.lanes.length === 0) this.markBroken('module');
    }
  }
}

