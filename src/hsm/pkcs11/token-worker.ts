import type { Handle, PKCS11, Template } from 'pkcs11js';
import type { FromWorker, ObjectAttrs, ToWorker, WireAttribute, WireMechanism, WorkerInit, WorkerOp, WorkerResult } from './protocol.js';

interface WorkerEnv {
  parentPort: { on(ev: 'message', cb: (m: ToWorker) => void): void; postMessage(m: FromWorker): void };
  workerData: WorkerInit;
  pkcs11js: { PKCS11: new () => PKCS11 };
}

/**
 * Body of a token worker thread. It owns one PKCS#11 session and runs the operations it is sent
 * one after the other with synchronous pkcs11js calls, so the event loop of the main thread never
 * waits on the token (RSA key generation takes ~150 ms).
 *
 * The function is shipped to the worker as source text (`Function.prototype.toString`) so that
 * the same code runs from TypeScript sources under the test runner and from the build output; it
 * therefore references nothing from module scope: every dependency arrives in `env`.
 */
export function tokenWorkerMain(env: WorkerEnv): void {
  const init = env.workerData;
  const K = init.consts;
  const sessionGone = new Set(init.codes.sessionGone);
  const handleStale = new Set(init.codes.handleStale);
  const notLoggedIn = new Set(init.codes.notLoggedIn);
  const tokenGone = new Set(init.codes.tokenGone);
  const signatureBad = new Set(init.codes.signatureBad);
  const copyRefused = new Set(init.codes.copyRefused);
  /** See the message handler at the end. */
  const RESULT_SLICE_MS = 0.3;

  class Failure extends Error {
    constructor(readonly result: WorkerResult) {
      super('token worker failure');
    }
  }
  const fail = (kind: 'notfound' | 'purpose' | 'notoken' | 'module', detail: string): never => {
    throw new Failure({ ok: false, kind, detail });
  };
  const ckrOf = (e: unknown): number | undefined => {
    const c = (e as { code?: unknown } | null)?.code;
    return typeof c === 'number' && c !== 0 && /^CKR_/.test(String((e as Error).message)) ? c : undefined;
  };

  const m = new env.pkcs11js.PKCS11();
  /**
   * SoftHSM2 rewrites the token's `token.object` in place at every C_Login, truncating it first.
   * A C_GetTokenInfo or C_Login of another process that reads the file meanwhile answers
   * CKR_GENERAL_ERROR, the answer it also gives when the token is gone. Measured with pkcs11js
   * loops on one token (hsm/README.md): with one process logging in and out and another asking
   * for the token info, 1 C_GetTokenInfo in 640 to 24,000 failed, and each of 36 failures timed
   * answered at the first call 1.1–1.4 ms later; with two processes logging in and out, 39–44 %
   * of the C_Logins failed. So both are asked again when they answer CKR_GENERAL_ERROR, the
   * waits doubling from 1 ms, and the failure is believed after about 255 ms: on a loaded machine
   * the writer can lose its core in the middle of the rewrite (with six busy loops on the two
   * cores, failures lasted up to 128 ms; with the whole test suite running, a test still saw
   * failures after waits adding up to 63 ms). The waits block this worker thread only, never the
   * event loop; a SoftHSM2 token that is really gone costs each such call that long before the
   * store marks it broken. A refused PIN is never asked again: that is CKR_PIN_INCORRECT.
   */
  const REWRITE_WAITS_MS = [1, 2, 4, 8, 16, 32, 64, 128];
  const pause = new Int32Array(new SharedArrayBuffer(4));
  function acrossRewrites<T>(call: () => T): T {
    for (let i = 0; ; i++) {
      try {
        return call();
      } catch (e) {
        const wait = REWRITE_WAITS_MS[i];
        if (wait === undefined || ckrOf(e) !== K.CKR_GENERAL_ERROR) throw e;
        Atomics.wait(pause, 0, 0, wait);
      }
    }
  }
  /** What the last C_GetTokenInfo threw after all its waits: a failure that needs no second probe. */
  let unanswered: unknown = null;
  function tokenInfo(s: Handle): ReturnType<PKCS11['C_GetTokenInfo']> {
    try {
      return acrossRewrites(() => m.C_GetTokenInfo(s));
    } catch (e) {
      unanswered = e;
      throw e;
    }
  }
  let loaded = false;
  let slot: Handle | null = null;
  let session: Handle | null = null;
  interface Cached {
    priv?: Handle;
    pub?: Handle;
    secret?: Handle;
    kind: 'ec' | 'rsa' | 'aes' | 'other';
    /** Session copy of `priv` that signatures use; when `priv` was last checked and the copy last used (performance.now()). */
    copy?: Handle;
    checkedAt?: number;
    usedAt?: number;
    /** The module or the key refused a copy (CKA_COPYABLE false, say): sign with `priv`. */
    noCopy?: boolean;
  }
  const cache = new Map<string, Cached>();

  const buf = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
  const tpl = (attrs: WireAttribute[]): Template =>
    attrs.map((a) => ({ type: a.type, value: a.value instanceof Uint8Array ? buf(a.value) : a.value }));
  const mech = (w: WireMechanism): { mechanism: number; parameter?: never } => {
    if (!w.parameter) return { mechanism: w.mechanism };
    const p: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(w.parameter)) p[k] = v instanceof Uint8Array ? buf(v) : v;
    return { mechanism: w.mechanism, parameter: p as never };
  };

  function load(): void {
    if (loaded) return;
    try {
      m.load(init.module);
    } catch {
      fail('module', 'the PKCS#11 module could not be loaded');
    }
    loaded = true;
    // The main thread initialized the module before starting this worker, so this normally
    // answers CKR_CRYPTOKI_ALREADY_INITIALIZED (RIG-FACTS: racing real initializations crash).
    initialize();
  }
  function initialize(): void {
    try {
      m.C_Initialize({ flags: K.CKF_OS_LOCKING_OK });
    } catch (e) {
      if (ckrOf(e) !== K.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw e;
    }
  }
  function findSlot(): Handle {
    for (const s of m.C_GetSlotList(true)) {
      try {
        if (tokenInfo(s).label.trimEnd() === init.tokenLabel) return s;
      } catch {
        // A token that stopped answering is simply not ours any more.
      }
    }
    return fail('notoken', 'no token with the configured label');
  }
  function login(s: Handle): void {
    try {
      acrossRewrites(() => m.C_Login(s, K.CKU_USER, init.pin));
    } catch (e) {
      if (ckrOf(e) !== K.CKR_USER_ALREADY_LOGGED_IN) throw e;
    }
  }
  // Private objects are invisible to a session that is not logged in (PKCS#11 v2.40 §4.1.2):
  // before any search, make sure nobody logged the application out behind our back.
  function ensureLoggedIn(s: Handle): void {
    const state = m.C_GetSessionInfo(s).state;
    if (state !== K.CKS_RW_USER_FUNCTIONS && state !== K.CKS_RO_USER_FUNCTIONS) login(s);
  }
  function ensureSession(): Handle {
    load();
    if (session) return session;
    if (!slot) slot = findSlot();
    const s = m.C_OpenSession(slot, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION);
    try {
      // Login state is per application (PKCS#11 v2.40 §5.6): skip C_Login when another session of
      // this process already holds it, so a wrong PIN is presented as rarely as possible.
      ensureLoggedIn(s);
    } catch (e) {
      try {
        m.C_CloseSession(s);
      } catch {
        // The session is useless either way.
      }
      throw e;
    }
    session = s;
    return s;
  }
  function dropSession(): void {
    if (session) {
      try {
        // Closing the session also destroys the session objects it made: the copies.
        m.C_CloseSession(session);
      } catch {
        // Already closed behind our back.
      }
    }
    session = null;
    cache.clear();
  }

  // ---- session copies ----------------------------------------------------------------------
  // SoftHSM2's file store opens, locks and reads a token object's file for every attribute it
  // reads, several times per C_SignInit; a session object lives in memory. So signatures use a
  // copy of the private key made inside the token (C_CopyObject with CKA_TOKEN false: the copy
  // keeps CKA_SENSITIVE and CKA_EXTRACTABLE false, which no copy may change).
  // Every copyCheckMs, while copies exist, the sweep below reads one attribute of each copy's
  // token object: a key another process destroyed (CKR_OBJECT_HANDLE_INVALID) or a token that
  // went away loses its copy then. A copy unused for copyIdleMs is destroyed too. Copies are
  // otherwise kept, not remade: SoftHSM2 frees a destroyed session object's memory only at
  // C_Finalize (about 250 bytes per copy made; see hsm/README.md).
  const copyTemplate: Template = [{ type: K.CKA_TOKEN, value: false }];
  let sweepTimer: ReturnType<typeof setTimeout> | null = null;

  function dropCopy(key: Cached): void {
    const h = key.copy;
    if (h === undefined) return;
    key.copy = undefined;
    if (!session) return;
    try {
      m.C_DestroyObject(session, h);
    } catch {
      // Gone already: a logout destroys private session objects, a closed session its own.
    }
  }
  /** Forgets a key's handles, destroying its copy. */
  function forgetKey(id: string): void {
    const c = cache.get(id);
    if (c) dropCopy(c);
    cache.delete(id);
  }
  function sweepCopies(): void {
    sweepTimer = null;
    const now = performance.now();
    let left = false;
    for (const [id, c] of cache) {
      if (c.copy === undefined) continue;
      if (!session || now - (c.usedAt ?? 0) >= init.copyIdleMs) {
        dropCopy(c);
        continue;
      }
      try {
        checkTokenObject(session, c, now);
        left = true;
      } catch {
        // The token object is gone (or the session or the token): forget the key, so that its
        // next use looks it up again and meets the usual recovery.
        forgetKey(id);
      }
    }
    if (left) scheduleSweep();
  }
  /** One attribute read of the copy's token object: throws once that object is gone. */
  function checkTokenObject(s: Handle, key: Cached, now: number): void {
    m.C_GetAttributeValue(s, key.priv as Handle, [{ type: K.CKA_CLASS }]);
    key.checkedAt = now;
  }
  function scheduleSweep(): void {
    if (sweepTimer) return;
    sweepTimer = setTimeout(sweepCopies, init.copyCheckMs);
    sweepTimer.unref?.();
  }
  function copyObject(s: Handle, h: Handle): Handle {
    try {
      return m.C_CopyObject(s, h, copyTemplate);
    } catch (e) {
      // pkcs11js (2.1) does not turn this function's native error into a Pkcs11Error: the CKR is
      // only in the message ("CKR_OBJECT_HANDLE_INVALID:130"). Give it the usual shape.
      const match = /^(CKR_[A-Z0-9_]+):(\d+)/.exec(String((e as Error | null)?.message));
      if (match) throw Object.assign(new Error(match[1]), { code: Number(match[2]), method: 'C_CopyObject' });
      throw e;
    }
  }
  /** The handle a signature uses: the key's session copy (made on first use), or the key. */
  function signingHandle(s: Handle, key: Cached): Handle {
    const priv = need(key.priv, 'private');
    if (!init.sessionCopies || key.noCopy) return priv;
    const now = performance.now();
    if (key.copy === undefined) {
      try {
        key.copy = copyObject(s, priv);
      } catch (e) {
        const c = ckrOf(e);
        if (c === undefined || !copyRefused.has(c)) throw e;
        key.noCopy = true;
        return priv;
      }
      key.checkedAt = now;
      scheduleSweep();
    } else if (now - (key.checkedAt ?? 0) >= 2 * init.copyCheckMs) {
      // The sweep is late (this thread has been busy): check here, before the copy signs.
      checkTokenObject(s, key, now);
    }
    key.usedAt = now;
    return key.copy;
  }

  /** Search template for the token objects of a key id, or with `token` false for this process's session copies of them. */
  function tokenObjects(id: string, token = true): Template {
    return [{ type: K.CKA_ID, value: Buffer.from(id, 'hex') }, { type: K.CKA_TOKEN, value: token }];
  }
  function findHandles(s: Handle, template: Template): Handle[] {
    m.C_FindObjectsInit(s, template);
    try {
      const out: Handle[] = [];
      for (;;) {
        const batch = m.C_FindObjects(s, 64);
        out.push(...batch);
        if (batch.length < 64) return out;
      }
    } finally {
      m.C_FindObjectsFinal(s);
    }
  }
  function readAttrs(s: Handle, h: Handle): ObjectAttrs | null {
    const base = m.C_GetAttributeValue(s, h, [{ type: K.CKA_CLASS }, { type: K.CKA_KEY_TYPE }, { type: K.CKA_ID }, { type: K.CKA_LABEL }]);
    const clsNum = (base[0]?.value as Buffer).readUInt32LE(0);
    const cls = clsNum === K.CKO_PRIVATE_KEY ? 'private' : clsNum === K.CKO_PUBLIC_KEY ? 'public' : clsNum === K.CKO_SECRET_KEY ? 'secret' : null;
    if (!cls) return null;
    const out: ObjectAttrs = {
      cls,
      keyType: (base[1]?.value as Buffer).readUInt32LE(0),
      id: (base[2]?.value as Buffer).toString('hex'),
      label: (base[3]?.value as Buffer).toString('utf8'),
    };
    if (cls !== 'public') {
      const f = m.C_GetAttributeValue(s, h, [{ type: K.CKA_SENSITIVE }, { type: K.CKA_EXTRACTABLE }]);
      out.sensitive = (f[0]?.value as Buffer)[0] === 1;
      out.extractable = (f[1]?.value as Buffer)[0] === 1;
    }
    if (out.keyType === K.CKK_EC && cls !== 'secret') {
      out.ecParams = m.C_GetAttributeValue(s, h, [{ type: K.CKA_EC_PARAMS }])[0]?.value as Buffer;
    } else if (out.keyType === K.CKK_RSA && cls === 'public') {
      out.modulusBits = (m.C_GetAttributeValue(s, h, [{ type: K.CKA_MODULUS_BITS }])[0]?.value as Buffer).readUInt32LE(0);
    } else if (out.keyType === K.CKK_RSA) {
      out.modulusBits = (m.C_GetAttributeValue(s, h, [{ type: K.CKA_MODULUS }])[0]?.value as Buffer).length * 8;
    } else if (out.keyType === K.CKK_AES) {
      out.valueLen = (m.C_GetAttributeValue(s, h, [{ type: K.CKA_VALUE_LEN }])[0]?.value as Buffer).readUInt32LE(0);
    }
    return out;
  }
  function lookup(s: Handle, id: string): Cached {
    const hit = cache.get(id);
    if (hit) return hit;
    ensureLoggedIn(s);
    const c: Cached = { kind: 'other' };
    for (const h of findHandles(s, tokenObjects(id))) {
      const a = m.C_GetAttributeValue(s, h, [{ type: K.CKA_CLASS }, { type: K.CKA_KEY_TYPE }]);
      const cls = (a[0]?.value as Buffer).readUInt32LE(0);
      const kt = (a[1]?.value as Buffer).readUInt32LE(0);
      if (cls === K.CKO_PRIVATE_KEY) c.priv = h;
      else if (cls === K.CKO_PUBLIC_KEY) c.pub = h;
      else if (cls === K.CKO_SECRET_KEY) c.secret = h;
      else continue;
      c.kind = kt === K.CKK_EC ? 'ec' : kt === K.CKK_RSA ? 'rsa' : kt === K.CKK_AES ? 'aes' : 'other';
    }
    if (!c.priv && !c.pub && !c.secret) {
      // An empty search is also what a vanished token gives (the object store went away under
      // SoftHSM2): ask the token before calling the key missing.
      tokenInfo(slot as Handle);
      return fail('notfound', 'no object with this CKA_ID');
    }
    cache.set(id, c);
    return c;
  }
  function need(h: Handle | undefined, what: string): Handle {
    return h ?? fail('purpose', `the key has no ${what} object`);
  }
  function sigMech(key: Cached, name: string): ReturnType<typeof mech> {
    const w = init.mechs[name];
    if (!w) return fail('purpose', 'unknown signature mechanism');
    if (w.kind !== key.kind) return fail('purpose', 'the key type does not do this signature scheme');
    return mech(w);
  }

  function exec(o: WorkerOp, s: Handle): unknown {
    switch (o.op) {
      case 'connect':
        return m.C_GetSessionInfo(s).state;
      case 'health':
        tokenInfo(slot as Handle);
        return m.C_GetSessionInfo(s).state;
      case 'genPair': {
        const kp = m.C_GenerateKeyPair(s, mech(o.mech), tpl(o.pub), tpl(o.priv));
        forgetKey(o.id);
        return kp.privateKey.length > 0;
      }
      case 'genSecret': {
        m.C_GenerateKey(s, mech(o.mech), tpl(o.tpl));
        forgetKey(o.id);
        return true;
      }
      case 'find': {
        ensureLoggedIn(s);
        const out: ObjectAttrs[] = [];
        for (const h of findHandles(s, tokenObjects(o.id))) {
          const a = readAttrs(s, h);
          if (a) out.push(a);
        }
        if (out.length === 0) tokenInfo(slot as Handle);
        return out;
      }
      case 'list': {
        ensureLoggedIn(s);
        const out: ObjectAttrs[] = [];
        for (const cls of [K.CKO_PRIVATE_KEY, K.CKO_SECRET_KEY, K.CKO_PUBLIC_KEY]) {
          for (const h of findHandles(s, [{ type: K.CKA_CLASS, value: cls }, { type: K.CKA_TOKEN, value: true }])) {
            const a = readAttrs(s, h);
            if (a) out.push(a);
          }
        }
        // A vanished object store lists as empty: never let that pass for "no keys" during
        // reconciliation.
        tokenInfo(slot as Handle);
        return out;
      }
      case 'pub': {
        const key = lookup(s, o.id);
        const h = need(key.pub, 'public');
        if (key.kind === 'ec') {
          const v = m.C_GetAttributeValue(s, h, [{ type: K.CKA_EC_POINT }]);
          return { kind: 'ec', point: v[0]?.value as Buffer };
        }
        if (key.kind === 'rsa') {
          const v = m.C_GetAttributeValue(s, h, [{ type: K.CKA_MODULUS }, { type: K.CKA_PUBLIC_EXPONENT }]);
          return { kind: 'rsa', n: v[0]?.value as Buffer, e: v[1]?.value as Buffer };
        }
        return fail('purpose', 'not an asymmetric key');
      }
      case 'sign': {
        const key = lookup(s, o.id);
        const mm = sigMech(key, o.mech);
        m.C_SignInit(s, mm, signingHandle(s, key));
        // A compact copy: posting a view of the 1 KiB output buffer would copy all of it.
        return new Uint8Array(m.C_Sign(s, buf(o.data), Buffer.alloc(1024)));
      }
      case 'verify': {
        const key = lookup(s, o.id);
        const mm = sigMech(key, o.mech);
        m.C_VerifyInit(s, mm, need(key.pub, 'public'));
        try {
          return m.C_Verify(s, buf(o.data), buf(o.sig));
        } catch (e) {
          const c = ckrOf(e);
          if (c !== undefined && signatureBad.has(c)) return false;
          throw e;
        }
      }
      case 'encrypt': {
        const key = lookup(s, o.id);
        if (key.kind !== 'aes') return fail('purpose', 'not a secret key');
        const iv = m.C_GenerateRandom(s, Buffer.alloc(12));
        m.C_EncryptInit(
          s,
          { mechanism: K.CKM_AES_GCM, parameter: { type: K.CK_PARAMS_GCM, iv, aad: buf(o.aad), ivBits: 96, tagBits: 128 } as never },
          need(key.secret, 'secret'),
        );
        // An empty input becomes a NULL pointer that SoftHSM2 refuses in C_Encrypt; the
        // multi-part finish alone yields the tag of the empty message (SP 800-38D §7.1).
        const ct = o.data.length === 0 ? m.C_EncryptFinal(s, Buffer.alloc(16)) : m.C_Encrypt(s, buf(o.data), Buffer.alloc(o.data.length + 16));
        return { iv: new Uint8Array(iv), ct: new Uint8Array(ct) };
      }
      case 'decrypt': {
        const key = lookup(s, o.id);
        if (key.kind !== 'aes') return fail('purpose', 'not a secret key');
        m.C_DecryptInit(
          s,
          { mechanism: K.CKM_AES_GCM, parameter: { type: K.CK_PARAMS_GCM, iv: buf(o.iv), aad: buf(o.aad), ivBits: o.iv.length * 8, tagBits: 128 } as never },
          need(key.secret, 'secret'),
        );
        return new Uint8Array(m.C_Decrypt(s, buf(o.data), Buffer.alloc(o.data.length + 16)));
      }
      case 'random':
        return m.C_GenerateRandom(s, Buffer.alloc(o.length));
      case 'destroy': {
        ensureLoggedIn(s);
        forgetKey(o.id);
        const destroyAll = (template: Template): number => {
          let n = 0;
          for (const h of findHandles(s, template)) {
            try {
              m.C_DestroyObject(s, h);
              n++;
            } catch (e) {
              // Destroyed meanwhile by someone else: that is the state we want.
              const c = ckrOf(e);
              if (c === undefined || !handleStale.has(c)) throw e;
            }
          }
          return n;
        };
        // This process's session copies first (any worker's: session objects belong to the
        // application), then the token objects, which are what the count reports.
        destroyAll(tokenObjects(o.id, false));
        const n = destroyAll(tokenObjects(o.id));
        // Nothing to destroy is only "already destroyed" if the token still answers.
        if (n === 0) tokenInfo(slot as Handle);
        return n;
      }
      case 'closeAllSessions':
        m.C_CloseAllSessions(slot as Handle);
        return true;
      case 'logout':
        m.C_Logout(s);
        return true;
      default:
        return fail('module', 'unknown operation');
    }
  }

  function control(o: WorkerOp): unknown {
    switch (o.op) {
      case 'forget':
        forgetKey(o.id);
        return true;
      case 'drop':
        dropSession();
        slot = null;
        return true;
      case 'reinit': {
        // SoftHSM2 builds its slot list at C_Initialize and keeps a token whose object store
        // vanished broken until the module is finalized and initialized again (hsm/README.md).
        session = null;
        slot = null;
        cache.clear();
        load();
        try {
          m.C_Finalize();
        } catch {
          // Not initialized: initialize below.
        }
        initialize();
        slot = findSlot();
        return true;
      }
      default:
        return undefined;
    }
  }

  function run(o: WorkerOp): WorkerResult {
    let fn: string = o.op;
    try {
      const c = control(o);
      if (c !== undefined) return { ok: true, v: c };
      for (let attempt = 0; ; attempt++) {
        try {
          fn = 'session';
          const s = ensureSession();
          fn = o.op;
          return { ok: true, v: exec(o, s) };
        } catch (e) {
          const code = ckrOf(e);
          if (code === undefined || attempt > 0) throw e;
          if (sessionGone.has(code)) {
            session = null;
            cache.clear();
          } else if (notLoggedIn.has(code) && session) {
            login(session);
          } else if (handleStale.has(code) && 'id' in o) {
            forgetKey(o.id);
          } else throw e;
        }
      }
    } catch (e) {
      if (e instanceof Failure) return e.result;
      const code = ckrOf(e);
      if (code === undefined) return { ok: false, kind: 'module', detail: String((e as Error)?.message ?? e).slice(0, 200) };
      // Ask the token itself: SoftHSM2 reports a failed GCM tag as CKR_GENERAL_ERROR, the same
      // value it returns once its object store has vanished.
      // A failure that was itself that question (an empty search's probe, say) is not asked
      // again: its waits across SoftHSM2's token-file rewrites are already behind it.
      let gone = slot ? e === unanswered : tokenGone.has(code);
      if (slot && !gone) {
        try {
          tokenInfo(slot);
        } catch {
          gone = true;
        }
      }
      if (gone) {
        session = null;
        slot = null;
        cache.clear();
      } else {
        // A failed C_Sign/C_Decrypt may leave the operation active (CKR_OPERATION_ACTIVE on the
        // next *Init): a fresh session is the one portable way to clear it.
        dropSession();
      }
      const method = (e as { method?: unknown }).method;
      return { ok: false, ckr: code, fn: typeof method === 'string' && method !== '' ? method : fn, gone };
    }
  }

  // Results go back in slices of about RESULT_SLICE_MS of work, not once per batch: the main
  // thread then answers the first requests of a long batch while this thread signs the rest,
  // instead of the two threads taking turns (a batch of 64 ECDSA signatures is 2.4 ms here).
  env.parentPort.on('message', (msg) => {
    if (msg.t !== 'batch') return;
    let out: Array<{ n: number; r: WorkerResult }> = [];
    let since = performance.now();
    for (const x of msg.ops) {
      out.push({ n: x.n, r: run(x.o) });
      const now = performance.now();
      if (now - since >= RESULT_SLICE_MS) {
        env.parentPort.postMessage({ t: 'results', r: out });
        out = [];
        since = now;
      }
    }
    if (out.length > 0) env.parentPort.postMessage({ t: 'results', r: out });
  });
  env.parentPort.postMessage({ t: 'ready', r: { ok: true, v: true } });
}
