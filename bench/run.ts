/**
 * `npm run bench`: every figure the issues ask for, measured in one run on this machine.
 *
 * 1. Raw PKCS#11 ceiling: synchronous pkcs11js C_Sign in this process (ECDSA P-256, RSA-2048),
 *    before anything else loads the machine.
 * 2. Quote verification in-process next to crypto.verify for the same key (RSA and ECC AKs).
 * 3. Rotation planning over 100k keys; audit chain verification (when bench/audit-verify exists).
 * 4. A custos server in a child process (production wiring, SoftHSM2 token made here, SQLite and
 *    policies in a temp folder) and this process as the load generator over keep-alive HTTP:
 *    key sign (ec-p256, rsa-2048) closed-loop at several concurrencies, the same from wrk when it
 *    is installed (./wrk.ts: a C generator that leaves more of the two cores to the server), and
 *    open-loop at half the measured peak; sessions end to end (challenge, quote verify, policy, HSM-signed JWT, HPKE
 *    seal, audit append, nonce consume) with software AKs (test/helpers/soft-tpm.ts), closed-loop
 *    and open-loop at 1,000/s.
 * Prints readable tables, then one line `BENCH_JSON {...}` with every figure.
 *
 * Environment: BENCH_SCALE (default 1) multiplies every measuring time (0.2 for a smoke run);
 * BENCH_ONLY=sign|sign-batch|sessions runs only that HTTP part (sign-wrk: only the wrk sign rows; several: sign-batch,sessions); BENCH_CPU_PROF=<dir> profiles the server;
 * BENCH_NODE_FLAGS="--trace-gc …" passes more Node flags to the server (CUSTOS_HEAP_GROWING_PERCENT reaches it as it
 * would reach `custos serve`); BENCH_SESSION_RATES=300,1000 adds open-loop ECC session rows at those rates,
 * each followed by where its time went (challenge, quote, session request; and for the slowest 1%);
 * BENCH_STALL_LOG=1 makes the server print each event-loop stall over 15 ms (BENCH_STALL_LOG=10: over
 * 10 ms), split into running, waiting for a core and blocked (bench/server.ts); BENCH_ONLY=sign-open
 * with BENCH_SIGN_OPEN_RATE=N runs only the open-loop sign rows, at N/s, and BENCH_OPEN_SECONDS sets
 * how long each of those rows runs (default 3). The sign row at half the peak comes twice: from
 * the Node generator and from bench/openloop.c (the target's row when a C compiler is there). So do
 * the sessions rows at 1,000/s, from bench/openloop.c built with libcrypto, which plays the
 * enclaves (nativeSessions); the sessions peak is the higher of both generators' closed loops.
 *
 * This process, the load generator, runs with --single-threaded-gc and a 2 MB young generation
 * (package.json): its parallel scavenges otherwise wait for helper threads that the server keeps
 * off the two cores, and `--trace-gc` showed 25–55 ms generator pauses that landed in the
 * client-side p99 (the generator's loop-delay maximum went from 38–72 ms to 9–23 ms).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createECDH, createHash, randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DEFAULT_HEAP_GROWING_PERCENT } from '../src/config/config.js';
import { planRotations } from '../src/rotation/planner.js';
import type { KeyVersionInfo, KeyWithVersions } from '../src/rotation/types.js';
import type { AutomaticRotationPolicy } from '../src/policy/rotation-policy.js';
import { startSoftHsm, type SoftHsm } from '../test/helpers/softhsm.js';
import { SoftAk } from '../test/helpers/soft-tpm.js';
import { closedLoop, JsonClient, openLoop, type RunResult } from './load.js';
import { httpFloorBench } from './http-floor.js';
import { rawSignRate } from './pkcs11-raw.js';
import { buildOpenLoop, nativeOpenLoop, nativeSessions, type NativeOpenLoopRun } from './openloop.js';
import { wrkAvailable, wrkClosedLoop } from './wrk.js';
import { quoteVerifyRate } from './quote-verify.js';
import type { BenchHost, FromServer, ToServer } from './server.js';

const SCALE = Number(process.env.BENCH_SCALE ?? '1') > 0 ? Number(process.env.BENCH_SCALE ?? '1') : 1;
const ms = (n: number): number => Math.max(200, Math.round(n * SCALE));
const HERE = dirname(fileURLToPath(import.meta.url));
const PCR0 = Buffer.alloc(32, 0x11);
const PCR1 = Buffer.alloc(32, 0x22);
const ECC_HOSTS = 64;
const RSA_HOSTS = 16;

const load = (): string => loadavg().map((l) => l.toFixed(2)).join(' ');
const fmt = (n: number): string => n.toLocaleString('en-US');
// Three decimals: at two, a rate of 0.497 × its target's base would print as the 0.5 it misses.
const ratio = (a: number, b: number): number => Math.round((a / b) * 1000) / 1000;

// ---------- planning ----------

function planningBench(): { keys: number; ms: number; steps: number } {
  const DAY = 86_400_000;
  const now = new Date(Date.UTC(2026, 5, 1));
  const policies: AutomaticRotationPolicy[] = ['a', 'b', 'c'].map((p, i) => ({
    id: `bench-${p}`, version: 1, selector: { names: [`${p}-*`] }, rotateEvery: ['P30D', 'P90D', 'P365D'][i]!, prePublish: 'P7D',
    deactivateAfter: 'P30D', destroyAfter: 'P44D', destroyPendingWindow: 'P14D', jitter: 'PT6H',
  }));
  const keys: KeyWithVersions[] = [];
  for (let i = 0; i < 100_000; i++) {
    const created = new Date(now.getTime() - (i % 400) * DAY);
    const versions: KeyVersionInfo[] = [{ version: 1, state: 'active', createdAt: created, activatedAt: created }];
    if (i % 3 === 0) versions.push({ version: 2, state: 'pre-active', createdAt: new Date(now.getTime() - 2 * DAY) });
    if (i % 5 === 0) {
      versions.unshift({ version: 0, state: 'deactivated', createdAt: created, activatedAt: created, deactivatedAt: new Date(now.getTime() - (i % 60) * DAY) });
    }
    keys.push({ name: `${['a', 'b', 'c'][i % 3]}-${i}`, type: 'ec-p256', purpose: 'sign', createdAt: created, versions });
  }
  planRotations(policies, keys.slice(0, 2000), now);
  const t = performance.now();
  const steps = planRotations(policies, keys, now);
  return { keys: keys.length, ms: Math.round((performance.now() - t) * 10) / 10, steps: steps.length };
}

// Figures other modules of bench/ may provide; the file is looked for next to this one so that
// the bench still runs before it exists.
async function optionalModule(name: string): Promise<Record<string, unknown> | undefined> {
  const p = join(HERE, `${name}.js`);
  if (!existsSync(p)) return undefined;
  return (await import(pathToFileURL(p).href)) as Record<string, unknown>;
}

// ---------- server child ----------

interface ServerHandle {
  child: ChildProcess;
  url: string;
  token: string;
  /** The server's HSM adapter signs with session copies of the keys (hsm/README.md). */
  sessionCopies: boolean;
  request(m: ToServer, answer: FromServer['type']): Promise<FromServer>;
}

async function startServer(hsm: SoftHsm, dir: string, processes: number): Promise<ServerHandle> {
  const policies = join(dir, 'policies');
  await mkdir(join(policies, 'attestation'), { recursive: true });
  await mkdir(join(policies, 'sessions'), { recursive: true });
  await writeFile(join(policies, 'attestation', 'bench.yaml'), [
    'id: bench-hosts', 'version: 1', 'hosts:', '  labels:', '    role: bench', 'enrollment:', '  requireEkCertificate: true',
    'pcrs:', '  bank: sha256', '  indices: [0, 1]', '  referenceValues:', `    "1": ["${PCR1.toString('hex')}"]`, 'nonceTtl: PT60S', '',
  ].join('\n'));
  await writeFile(join(policies, 'sessions', 'bench.yaml'), [
    'id: bench-sessions', 'version: 1', 'hosts:', '  labels:', '    role: bench', 'attestationPolicy: bench-hosts', 'audiences: [ledger]',
    'tokenTtl: PT2M', 'disclose: [ear.verifier-id]', 'issuerKey: bench-issuer', '',
  ].join('\n'));
  const pinFile = join(dir, 'pin');
  await writeFile(pinFile, hsm.pin, { mode: 0o600 });
  const ekCa = join(dir, 'ek-ca');
  await mkdir(ekCa, { recursive: true });
  const child = fork(join(HERE, 'server.js'), [], {
    env: {
      ...hsm.env,
      CUSTOS_STATE_DIR: join(dir, 'state'), CUSTOS_LISTEN: '127.0.0.1:0', CUSTOS_LOG_LEVEL: 'silent', CUSTOS_POLICY_DIR: policies,
      CUSTOS_EK_CA_DIR: ekCa, CUSTOS_ISSUER: 'https://custos.bench', CUSTOS_PKCS11_MODULE: hsm.module,
      CUSTOS_PKCS11_TOKEN_LABEL: hsm.tokenLabel, CUSTOS_PKCS11_PIN_FILE: pinFile, CUSTOS_ROTATION_ENABLED: 'false', CUSTOS_PROCESSES: String(processes),
      ...(process.env.CUSTOS_PKCS11_WORKERS ? { CUSTOS_PKCS11_WORKERS: process.env.CUSTOS_PKCS11_WORKERS } : {}),
      ...(process.env.CUSTOS_PKCS11_SESSION_COPIES ? { CUSTOS_PKCS11_SESSION_COPIES: process.env.CUSTOS_PKCS11_SESSION_COPIES } : {}),
      ...(process.env.CUSTOS_HEAP_GROWING_PERCENT ? { CUSTOS_HEAP_GROWING_PERCENT: process.env.CUSTOS_HEAP_GROWING_PERCENT } : {}),
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    // BENCH_CPU_PROF=<dir>: V8 CPU profile of the server, written when it stops.
    // BENCH_NODE_FLAGS="--trace-gc …": more Node flags for the server.
    execArgv: [
      ...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []),
      ...(process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter((f) => f !== ''),
    ],
  });
  const waiters: { type: FromServer['type']; resolve: (m: FromServer) => void; reject: (e: Error) => void }[] = [];
  child.on('message', (m: FromServer) => {
    if (m.type === 'error') {
      for (const w of waiters.splice(0)) w.reject(new Error(`server: ${m.message}`));
      return;
    }
    const i = waiters.findIndex((w) => w.type === m.type);
    if (i >= 0) waiters.splice(i, 1)[0]!.resolve(m);
  });
  child.on('exit', (code) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`server exited with ${code}`));
  });
  const wait = (type: FromServer['type'], timeoutMs = 120_000): Promise<FromServer> =>
    new Promise((resolve, reject) => {
      const w = {
        type,
        resolve: (m: FromServer) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      // A reply that never comes fails the run, naming what it waited for.
      const timer = setTimeout(() => {
        const i = waiters.indexOf(w);
        if (i >= 0) waiters.splice(i, 1);
        reject(new Error(`server: no '${type}' reply within ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.push(w);
    });
  const ready = (await wait('ready')) as Extract<FromServer, { type: 'ready' }>;
  return {
    child, url: ready.url, token: ready.token, sessionCopies: ready.sessionCopies,
    request(m, answer) {
      const p = wait(answer);
      child.send(m);
      return p;
    },
  };
}

// ---------- operations ----------

function signOp(client: JsonClient, token: string, key: string): () => Promise<void> {
  return async () => {
    const r = await client.post(`/v1/keys/${key}/sign`, { digest: randomBytes(32).toString('base64') }, token);
    if (r.status !== 200) throw new Error(`sign ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
  };
}

/** One POST …/sign-batch carrying `size` random digests. */
function signBatchOp(client: JsonClient, token: string, key: string, size: number): () => Promise<void> {
  return async () => {
    const batch = Array.from({ length: size }, () => ({ digest: randomBytes(32).toString('base64') }));
    const r = await client.post(`/v1/keys/${key}/sign-batch`, { batch }, token);
    if (r.status !== 200 || (r.body as { signatures: unknown[] }).signatures.length !== size) throw new Error(`sign-batch ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
  };
}

/** A run of batch requests expressed in signatures: rates × size, latencies stay per request. */
function perSignature(r: RunResult, size: number): RunResult {
  return { ...r, opsPerSec: r.opsPerSec * size, ...(r.targetPerSec !== undefined ? { targetPerSec: r.targetPerSec * size } : {}) };
}

/** RFC 7638 thumbprint of an EC P-256 public JWK (members in lexicographic order). */
function thumbprint(x: string, y: string): Buffer {
  return createHash('sha256').update(`{"crv":"P-256","kty":"EC","x":"${x}","y":"${y}"}`).digest();
}

/**
 * The enclaves' ephemeral public keys, made before a run starts (client-side work that would
 * otherwise take CPU from the server on this shared 2-core machine). Each session still sends a
 * key no other session used: `sessionKeys(n)` makes n of them for the next run.
 */
let ephemeralKeys: { x: string; y: string; jkt: Buffer }[] = [];
let nextEphemeral = 0;
// The public point straight from ECDH: no KeyObject export. (Node 20 can deadlock when a GC
// finalises a generateKeyPairSync job while the JWK export of its key holds the key's lock; a
// loop of thousands of generate-then-export calls met it.)
function ephemeralPublic(): { x: string; y: string; jkt: Buffer } {
  const point = createECDH('prime256v1').generateKeys();
  const x = point.subarray(1, 33).toString('base64url');
  const y = point.subarray(33, 65).toString('base64url');
  return { x, y, jkt: thumbprint(x, y) };
}
function sessionKeys(n: number): void {
  ephemeralKeys = Array.from({ length: n }, ephemeralPublic);
  nextEphemeral = 0;
}
function ephemeral(): { x: string; y: string; jkt: Buffer } {
  // More sessions than keys made ahead: make this one now.
  return ephemeralKeys[nextEphemeral++] ?? ephemeralPublic();
}

/**
 * Per session of a BENCH_SESSION_RATES row (recorded only while `splitting`): ms in the challenge,
 * the quote, the session request.
 */
const SPLIT: [number, number, number][] = [];
let splitting = false;
function splitReport(label: string): void {
  const q = (a: number[], p: number): number => {
    const b = [...a].sort((x, y) => x - y);
    return Math.round(b[Math.floor(p * (b.length - 1))]! * 100) / 100;
  };
  const col = (i: 0 | 1 | 2): number[] => SPLIT.map((r) => r[i]);
  const tot = SPLIT.map((r) => r[0] + r[1] + r[2]);
  const cut = q(tot, 0.99);
  const slow = SPLIT.filter((_, i) => tot[i]! >= cut);
  const avg = (i: 0 | 1 | 2): number => Math.round((slow.reduce((a, r) => a + r[i], 0) / Math.max(1, slow.length)) * 100) / 100;
  const pq = (i: 0 | 1 | 2): string => `${q(col(i), 0.5)}/${q(col(i), 0.99)}`;
  console.log(`    split ${label}: challenge p50/p99 ${pq(0)}, quote ${pq(1)}, session ${pq(2)}; slowest 1%: challenge ${avg(0)} quote ${avg(1)} session ${avg(2)}`);
  SPLIT.length = 0;
}
function sessionOp(client: JsonClient, hosts: { id: string; ak: SoftAk }[]): (slot: number) => Promise<void> {
  return async (slot) => {
    const h = hosts[slot % hosts.length]!;
    const t0 = performance.now();
    const c = await client.post('/v1/challenges', { hostId: h.id });
    const t1 = performance.now();
    if (c.status !== 200) throw new Error(`challenge ${c.status} ${JSON.stringify(c.body).slice(0, 200)}`);
    const nonce = Buffer.from((c.body as { nonce: string }).nonce, 'base64');
    const jwk = ephemeral();
    const extraData = createHash('sha256').update(nonce).update(jwk.jkt).digest();
    const q = h.ak.quote(extraData, [PCR0, PCR1]);
    const t2 = performance.now();
    const s = await client.post('/v1/sessions', {
      hostId: h.id, nonce: nonce.toString('base64'), ...q, ephemeralPublicKey: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, audience: 'ledger',
    });
    if (s.status !== 201) throw new Error(`session ${s.status} ${JSON.stringify(s.body).slice(0, 300)}`);
    const t3 = performance.now();
    if (splitting) SPLIT.push([t1 - t0, t2 - t1, t3 - t2]);
  };
}

// ---------- main ----------

/** The C generator's own time in a row's operations, and the row's latency less it (bench/openloop.c). */
function ownTime(row: Pick<Row, 'own' | 'lessOwn' | 'p999Ms' | 'over10Ms'>): void {
  if (row.own === undefined || row.lessOwn === undefined) return;
  console.log(`    the generator's own time per operation p50/p99/max ${row.own.p50Ms}/${row.own.p99Ms}/${row.own.maxMs} ms; latency less it p50/p99 ${row.lessOwn.p50Ms}/${row.lessOwn.p99Ms} ms; p99.9 ${row.p999Ms} ms, ${row.over10Ms} operations over 10 ms`);
}

/** Longest a row may take: every row runs for seconds; one that does not end fails the run. */
const ROW_LIMIT_MS = 300_000;

/**
 * A row that never ends (a generator that never exits, an answer lost without a timeout) fails
 * the run naming the row, rather than leaving the bench waiting with nothing to show.
 */
async function withinRowLimit<T>(run: Promise<T>, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`row "${label}" did not end within ${ROW_LIMIT_MS / 1000} s`)), ROW_LIMIT_MS);
  });
  try {
    return await Promise.race([run, limit]);
  } finally {
    clearTimeout(timer);
  }
}

interface Row extends RunResult {
  label: string;
  concurrency?: number;
  /** CPU time of the server process (all its threads) per operation. */
  serverCpuUsPerOp?: number;
  /** CPU time of the server's main thread (the event loop) per operation (sum over the server processes). */
  serverMainCpuUsPerOp?: number;
  /** CPU time of this process (the load generator) per operation. */
  generatorCpuUsPerOp?: number;
  /** Event-loop delay of the server's main thread over the run (max over the server processes). */
  serverLoopDelayP99Ms?: number;
  serverLoopDelayMaxMs?: number;
  /** Latency inside the server process (request event to 'finish'), over every server process. */
  serverP50Ms?: number;
  serverP99Ms?: number;
  /** Which load generator made the requests: this process (./load.ts) or wrk (./wrk.ts). */
  generator?: 'node' | 'wrk' | 'openloop.c';
  /** Event-loop delay of this process (the load generator) over the run. */
  generatorLoopDelayP99Ms?: number;
  generatorLoopDelayMaxMs?: number;
  /** The C generator: its own time per operation and the latency less it (bench/openloop.c). */
  own?: NativeOpenLoopRun['own'];
  lessOwn?: NativeOpenLoopRun['lessOwn'];
  p999Ms?: number;
  over10Ms?: number;
  load: string;
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const heapGrowing = Number(process.env.CUSTOS_HEAP_GROWING_PERCENT ?? DEFAULT_HEAP_GROWING_PERCENT);
  const out: Record<string, unknown> = { machine: { cpus: cpus().length, node: process.version, loadavgStart: loadavg() }, scale: SCALE, heapGrowingPercent: heapGrowing };
  console.log(`custos bench — ${cpus().length} CPUs, node ${process.version}, load average at start ${load()}, scale ${SCALE}; server heap growing ${heapGrowing}% (CUSTOS_HEAP_GROWING_PERCENT)`);
  const hsm = await startSoftHsm({ label: `custos-bench-${randomBytes(3).toString('hex')}` });
  const dir = await mkdtemp(join(tmpdir(), 'custos-bench-'));
  let started: ServerHandle | undefined;
  try {
    // 1. Raw PKCS#11 ceiling, with nothing else running in this run.
    const raw = await rawSignRate({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, durationMs: ms(2000) });
    out.rawPkcs11 = raw;
    console.log(`\n[raw PKCS#11] pkcs11js sync C_Sign, 1 session, this process (load ${load()})`);
    console.log(`  ec-p256  ${fmt(raw.ecP256)} signs/s (session key: the ratios below use this rate)\n  ec-p256  ${fmt(raw.ecP256TokenKey)} signs/s (token key, made like custos's keys)\n  rsa-2048 ${fmt(raw.rsa2048)} signs/s`);

    // 2. Quote verification.
    const qv = await quoteVerifyRate({ durationMs: ms(1000) });
    out.quoteVerify = { ...qv, ratioRsa: qv.rsa.ratio, ratioEcc: qv.ecc.ratio, target: 0.9 };
    console.log(`\n[quote verify] in-process, AK KeyObject cached (load ${load()})`);
    for (const [k, v] of [['rsa-2048 AK', qv.rsa], ['ecc-p256 AK', qv.ecc]] as const) {
      console.log(`  ${k}: verifyQuote ${fmt(v.verify)}/s, crypto.verify ${fmt(v.raw)}/s (medians of 50 ms slices), ratio ${v.ratio} (target ≥ 0.9)`);
    }

    // 3. Planning and audit verification.
    // Another module's failure is reported and does not stop the HTTP figures.
    const optional = async (name: string, fn: string): Promise<Record<string, unknown> | string | undefined> => {
      try {
        const mod = await optionalModule(name);
        if (!mod || typeof mod[fn] !== 'function') return undefined;
        return (await (mod[fn] as () => Promise<unknown>)()) as Record<string, unknown>;
      } catch (e) {
        return `failed: ${(e as Error).message}`;
      }
    };
    const plan = (await optional('plan', 'planBench')) ?? planningBench();
    out.planning = plan;
    console.log(`\n[rotation planning] ${JSON.stringify(plan)} (target < 1000 ms for 100k keys)`);
    const audit = await optional('audit-verify', 'auditVerifyBench');
    out.auditVerify = audit ?? 'not measured';
    console.log(`[audit verify] ${audit === undefined ? 'not measured (bench/audit-verify is not there)' : JSON.stringify(audit)} (target ≥ 500,000 events/s)`);

    // 4. HTTP.
    // CUSTOS_PROCESSES server processes (src/cluster.ts), one per core unless set.
    const processes = Number(process.env.CUSTOS_PROCESSES) > 0 ? Number(process.env.CUSTOS_PROCESSES) : availableParallelism();
    // Printed before and after, so that a run that hangs here says so.
    console.log(`\n[server] starting ${processes === 1 ? 'one process' : `${processes} server processes`} (load ${load()})`);
    const startedAt = performance.now();
    const srv = await startServer(hsm, dir, processes);
    console.log(`  ready in ${Math.round(performance.now() - startedAt)} ms on ${srv.url}; signs with ${srv.sessionCopies ? 'session copies of the token keys' : 'the token keys themselves'} (CUSTOS_PKCS11_SESSION_COPIES)`);
    started = srv;
    let loopDelay = { p99: 0, max: 0 };
    let serverLatency = { p50: 0, p99: 0 };
    const usage = async (): Promise<{ cpuUs: number; mainCpuUs: number }> => {
      const u = (await srv.request({ type: 'usage' }, 'usage')) as Extract<FromServer, { type: 'usage' }>;
      loopDelay = { p99: u.loopDelayP99Ms, max: u.loopDelayMaxMs };
      serverLatency = { p50: u.serverP50Ms, p99: u.serverP99Ms };
      return { cpuUs: u.cpuUs, mainCpuUs: u.mainCpuUs };
    };
    const eccHosts = Array.from({ length: ECC_HOSTS }, (_, i) => ({ id: `bench-ecc-${i}`, ak: new SoftAk('ecc') }));
    const rsaHosts = Array.from({ length: RSA_HOSTS }, (_, i) => ({ id: `bench-rsa-${i}`, ak: new SoftAk('rsa') }));
    const hostsMsg: BenchHost[] = [...eccHosts, ...rsaHosts].map((h) => ({
      id: h.id, akPublic: h.ak.tpm2bPublic.toString('base64'), akName: h.ak.name.toString('hex'), akQualifiedName: h.ak.qualifiedName.toString('hex'),
    }));
    await srv.request({ type: 'hosts', hosts: hostsMsg }, 'hosts-ok');
    const client: JsonClient = new JsonClient(srv.url, 256);
    out.processes = processes;
    out.sessionCopies = srv.sessionCopies;
    const rows: Row[] = [];
    // The load generator's own event-loop delay: a stall here delays requests before they are
    // sent, and the client's latency (counted from when a request was due) shows it.
    const genDelay = monitorEventLoopDelay({ resolution: 2 });
    genDelay.enable();
    const genBeyond = (ns: number): number => Math.max(0, Math.round((ns / 1e6 - 2) * 100) / 100);
    const measure = async (label: string, run: () => Promise<RunResult>, concurrency?: number): Promise<Row> => {
      await usage();
      const gen0 = process.cpuUsage();
      genDelay.reset();
      const r = await withinRowLimit(run(), label);
      const gen = process.cpuUsage(gen0);
      const generatorLoopDelay = { p99: genBeyond(genDelay.percentile(99)), max: genBeyond(genDelay.max) };
      const { cpuUs: cpu, mainCpuUs: mainCpu } = await usage();
      const ops = Math.max(1, r.ok + r.errors);
      // wrk rows carry wrk's own CPU; the loop delay measured here is then that of an idle process.
      const external = 'generatorCpuUsPerOp' in r && typeof r.generatorCpuUsPerOp === 'number';
      const row: Row = {
        label, ...r, ...(concurrency !== undefined ? { concurrency } : {}),
        serverCpuUsPerOp: Math.round(cpu / ops), serverMainCpuUsPerOp: Math.round(mainCpu / ops), generatorCpuUsPerOp: external ? (r.generatorCpuUsPerOp as number) : Math.round((gen.user + gen.system) / ops), load: load(),
        serverLoopDelayP99Ms: loopDelay.p99, serverLoopDelayMaxMs: loopDelay.max, serverP50Ms: serverLatency.p50, serverP99Ms: serverLatency.p99,
        generator: external ? ((r as { generator?: 'openloop.c' }).generator ?? 'wrk') : 'node',
        ...(external ? {} : { generatorLoopDelayP99Ms: generatorLoopDelay.p99, generatorLoopDelayMaxMs: generatorLoopDelay.max }),
      };
      rows.push(row);
      const extra = r.targetPerSec !== undefined ? ` at ${fmt(r.targetPerSec)}/s offered${r.saturated ? ' SATURATED' : ''}` : ` c=${concurrency}`;
      console.log(
        `  ${label.padEnd(26)}${extra.padEnd(20)} ${fmt(r.opsPerSec).padStart(7)}/s  p50 ${r.p50Ms} ms  p99 ${r.p99Ms} ms  CPU/op server ${row.serverCpuUsPerOp} µs${Number.isFinite(row.serverMainCpuUsPerOp) ? ` (main thread ${row.serverMainCpuUsPerOp})` : ''}, load generator ${row.generatorCpuUsPerOp} µs` +
          `, in-server p50/p99 ${serverLatency.p50}/${serverLatency.p99} ms, loop delay p99/max server ${loopDelay.p99}/${loopDelay.max} ms${external ? '' : `, generator ${generatorLoopDelay.p99}/${generatorLoopDelay.max} ms`}${r.errors ? `  ERRORS ${r.errors}: ${r.firstError}` : ''}  (load ${row.load})`,
      );
      return row;
    };

    // bench/openloop.c, built once when a part first needs it.
    let nativeBuild: ReturnType<typeof buildOpenLoop> | undefined;
    const nativeGenerator = (): ReturnType<typeof buildOpenLoop> => (nativeBuild ??= buildOpenLoop(dir));
    // BENCH_ONLY: a comma-separated list of parts (sign, sign-wrk, sign-batch, sessions); all when unset.
    const only = new Set((process.env.BENCH_ONLY ?? '').split(',').filter((p) => p !== ''));
    const part = (p: string): boolean => only.size === 0 || only.has(p);
    // sign-open: only the open-loop rows, at BENCH_SIGN_OPEN_RATE, each BENCH_OPEN_SECONDS long
    // (default 3): to compare builds or settings on the tail at one rate, over rows long enough to
    // count the rare stalls.
    const openOnly = only.has('sign-open') && !only.has('sign') && !only.has('sign-wrk');
    const openMs = ms(1000 * (Number(process.env.BENCH_OPEN_SECONDS) > 0 ? Number(process.env.BENCH_OPEN_SECONDS) : 3));
    if (openOnly) {
      const rate = Number(process.env.BENCH_SIGN_OPEN_RATE);
      if (!(rate > 0)) throw new Error('BENCH_ONLY=sign-open needs BENCH_SIGN_OPEN_RATE');
      console.log(`\n[HTTP sign, open loop only] ${fmt(rate)}/s for ${openMs / 1000} s: ${processes === 1 ? 'one process' : `${processes} server processes (CUSTOS_PROCESSES)`}`);
      await closedLoop(signOp(client, srv.token, 'bench-ec'), 16, ms(800)); // warm-up
      await measure('ec-p256 sign (open loop)', () => openLoop(signOp(client, srv.token, 'bench-ec'), rate, openMs));
      const native = nativeGenerator();
      if ('path' in native) ownTime(await measure('ec-p256 sign (open loop, C)', () => nativeOpenLoop(native.path, { url: srv.url, path: '/v1/keys/bench-ec/sign', token: srv.token, body: { digest: randomBytes(32).toString('base64') }, ratePerSec: rate, durationMs: openMs, connections: 256 })));
    }
    if (part('sign') || only.has('sign-wrk')) {
    console.log(`\n[HTTP sign] POST /v1/keys/{name}/sign, keep-alive, server in a child process on ${srv.url}: ${processes === 1 ? 'one process' : `${processes} server processes (CUSTOS_PROCESSES)`}`);
    // The floor first: what any Node HTTP server costs here per request, before doing any work.
    const floor = await httpFloorBench(64, ms(2000));
    for (const f of floor) {
      console.log(`  floor: ${f.label.padEnd(31)} c=64 ${fmt(f.opsPerSec).padStart(7)}/s  CPU/op server ${f.serverCpuUsPerOp} µs, load generator ${f.generatorCpuUsPerOp} µs  (fixed answer, no work)`);
    }
    await closedLoop(signOp(client, srv.token, 'bench-ec'), 16, ms(800)); // warm-up
    const signRows: Record<string, Row[]> = { ec: [], rsa: [] };
    // 256 connections too: a signing service has many clients, and more requests in flight let
    // one event-loop turn carry more of them (bigger PKCS#11 batches and group commits).
    const nodeRows = part('sign');
    if (nodeRows) for (const c of [1, 16, 64, 256]) signRows.ec!.push(await measure('ec-p256 sign', () => closedLoop(signOp(client, srv.token, 'bench-ec'), c, ms(2000)), c));
    if (nodeRows) for (const c of [1, 16, 64]) signRows.rsa!.push(await measure('rsa-2048 sign', () => closedLoop(signOp(client, srv.token, 'bench-rsa'), c, ms(2000)), c));
    // The same requests from wrk, which takes about a third of the Node generator's CPU per
    // request from the two cores the server also needs (a fixed digest; ECDSA signatures differ anyway).
    const useWrk = wrkAvailable();
    if (useWrk) {
      const wrkRow = (label: string, key: string, c: number): Promise<Row> =>
        measure(label, () => wrkClosedLoop({ dir, url: srv.url, path: `/v1/keys/${key}/sign`, token: srv.token, body: { digest: randomBytes(32).toString('base64') }, connections: c, durationMs: ms(3000) }), c);
      for (const c of [64, 256]) signRows.ec!.push(await wrkRow('ec-p256 sign (wrk)', 'bench-ec', c));
      signRows.rsa!.push(await wrkRow('rsa-2048 sign (wrk)', 'bench-rsa', 64));
    } else {
      console.log('  (wrk is not installed; `make bench` installs it: Node generator rows only)');
    }
    const ecPeak = Math.max(...signRows.ec!.map((r) => r.opsPerSec));
    const rsaPeak = Math.max(...signRows.rsa!.map((r) => r.opsPerSec));
    // BENCH_SIGN_OPEN_RATE=N: the open-loop row at N/s instead of half the measured peak (to compare builds at one rate).
    const halfRate = Number(process.env.BENCH_SIGN_OPEN_RATE) > 0 ? Number(process.env.BENCH_SIGN_OPEN_RATE) : Math.max(10, Math.round(ecPeak / 2));
    const ecOpenNode = await measure('ec-p256 sign (open loop)', () => openLoop(signOp(client, srv.token, 'bench-ec'), halfRate, openMs));
    // The same arrivals from bench/openloop.c, which costs the shared cores a few µs per request
    // where the Node generator costs 35–45 µs, and has no stalls of its own: the target row when
    // it can be built (as wrk's rows are for the peak).
    const native = nativeGenerator();
    const ecOpenNative = 'path' in native
      ? await measure('ec-p256 sign (open loop, C)', () => nativeOpenLoop(native.path, { url: srv.url, path: '/v1/keys/bench-ec/sign', token: srv.token, body: { digest: randomBytes(32).toString('base64') }, ratePerSec: halfRate, durationMs: openMs, connections: 256 }))
      : undefined;
    if (ecOpenNative !== undefined) ownTime(ecOpenNative);
    if (!('path' in native)) console.log(`  (no C open-loop row: ${native.reason}; the target uses the Node generator's)`);
    const ecOpen = ecOpenNative ?? ecOpenNode;
    const peakRow = signRows.ec!.find((r) => r.opsPerSec === ecPeak)!;
    const nodePeak = Math.max(...signRows.ec!.filter((r) => r.generator !== 'wrk').map((r) => r.opsPerSec));
    console.log(`  ec-p256 peak ${fmt(ecPeak)}/s = ${ratio(ecPeak, raw.ecP256)} × raw (target ≥ 0.5; ${peakRow.generator === 'wrk' ? 'wrk' : 'Node generator'}, c=${peakRow.concurrency}); p99 at half the peak ${ecOpen.p99Ms} ms (target < 10 ms; ${ecOpen.generator === 'node' ? 'Node generator' : 'C generator'}${ecOpenNative ? `; Node generator ${ecOpenNode.p99Ms} ms` : ''})`);
    console.log(`  ec-p256 peak = ${ratio(ecPeak, raw.ecP256TokenKey)} × raw C_Sign on a token key (${fmt(raw.ecP256TokenKey)}/s)`);
    if (useWrk && nodeRows) console.log(`  ec-p256 peak with the Node generator ${fmt(nodePeak)}/s = ${ratio(nodePeak, raw.ecP256)} × raw`);
    const nodeFloor = floor.find((f) => f.mode === 'node')!;
    console.log(`  ec-p256 peak = ${ratio(ecPeak, nodeFloor.opsPerSec)} × the node:http floor (${fmt(nodeFloor.opsPerSec)}/s)`);
    console.log(`  rsa-2048 peak ${fmt(rsaPeak)}/s = ${ratio(rsaPeak, raw.rsa2048)} × raw`);
    out.httpSign = {
      rows: [...signRows.ec!, ...signRows.rsa!, ecOpenNode, ...(ecOpenNative ? [ecOpenNative] : [])],
      ecPeak, ecPeakGenerator: peakRow.generator, ecPeakNodeGenerator: nodePeak, rsaPeak, ecRatioToRaw: ratio(ecPeak, raw.ecP256), rsaRatioToRaw: ratio(rsaPeak, raw.rsa2048),
      ecOpenLoopRate: halfRate, ecOpenLoopP99Ms: ecOpen.p99Ms, ecOpenLoopGenerator: ecOpen.generator, ecOpenLoopNodeP99Ms: ecOpenNode.p99Ms, targets: { ecRatio: 0.5, p99Ms: 10 }, floor,
    };
    }

    if (part('sign-batch')) {

    // Batches: POST …/sign-batch, every signature still made in the HSM and audited on its own.
    // Rates below count signatures (requests × batch size); latencies are per request.
    console.log(`\n[HTTP sign-batch] POST /v1/keys/{name}/sign-batch; rates in signatures/s, latency per request`);
    await closedLoop(signBatchOp(client, srv.token, 'bench-ec', 16), 4, ms(800)); // warm-up
    const batchRows: Row[] = [];
    for (const [size, c] of [[16, 16], [64, 4], [64, 16]] as const) {
      batchRows.push(await measure(`ec-p256 sign-batch ×${size}`, async () => perSignature(await closedLoop(signBatchOp(client, srv.token, 'bench-ec', size), c, ms(2000)), size), c));
    }
    const batchPeak = Math.max(...batchRows.map((r) => r.opsPerSec));
    // Half the peak signature rate, offered in batches of 16: smaller batches answer sooner.
    const openSize = 16;
    const halfBatchRate = Math.max(1, Math.round(batchPeak / 2 / openSize));
    const batchOpen = await measure(`ec-p256 sign-batch ×${openSize} (open)`, async () => perSignature(await openLoop(signBatchOp(client, srv.token, 'bench-ec', openSize), halfBatchRate, ms(3000)), openSize));
    console.log(`  ec-p256 batched peak ${fmt(batchPeak)} signatures/s = ${ratio(batchPeak, raw.ecP256)} × raw (target ≥ 0.5); p99 per request at half that load ${batchOpen.p99Ms} ms (target < 10 ms)`);
    out.httpSignBatch = {
      rows: [...batchRows, batchOpen], peakSignaturesPerSec: batchPeak, ratioToRaw: ratio(batchPeak, raw.ecP256), openLoopBatchSize: openSize,
      openLoopP99Ms: batchOpen.p99Ms, targets: { ratio: 0.5, p99Ms: 10 },
    };
    }

    if (part('sessions')) {
    const mb = (f: string): string => (existsSync(f) ? (statSync(f).size / 1e6).toFixed(1) : '0');
    const db = join(dir, 'state', 'custos.db');
    console.log(`\n[sessions] challenge + POST /v1/sessions end to end (software AKs: ${ECC_HOSTS} ECC P-256, ${RSA_HOSTS} RSA-2048 hosts; database ${mb(db)} MB, WAL ${mb(`${db}-wal`)} MB)`);
    // Enough ephemeral keys for a run at well above the rates measured here.
    const keysFor = (durationMs: number): void => sessionKeys(Math.ceil((3000 * durationMs) / 1000));
    keysFor(ms(800));
    await closedLoop(sessionOp(client, eccHosts), 16, ms(800)); // warm-up
    const sess: Row[] = [];
    for (const c of [16, 64]) {
      keysFor(ms(3000));
      sess.push(await measure('sessions ECC AK', () => closedLoop(sessionOp(client, eccHosts), c, ms(3000)), c));
    }
    keysFor(ms(3000));
    sess.push(await measure('sessions RSA AK', () => closedLoop(sessionOp(client, rsaHosts), RSA_HOSTS, ms(3000)), RSA_HOSTS));
    keysFor(ms(3000));
    const eccOpenNode = await measure('sessions ECC AK (open)', () => openLoop(sessionOp(client, eccHosts), 1000, ms(3000), ECC_HOSTS));
    keysFor(ms(3000));
    const rsaOpenNode = await measure('sessions RSA AK (open)', () => openLoop(sessionOp(client, rsaHosts), 1000, ms(3000), RSA_HOSTS));
    // The same sessions from bench/openloop.c (built with libcrypto), which spends a fraction of
    // the Node generator's CPU per session on the shared cores and has no stalls of its own: the
    // target rows when it can be built, as for signing.
    const native = nativeGenerator();
    const cSessions = 'sessions' in native && native.sessions ? native.path : undefined;
    if (cSessions === undefined) console.log(`  (no C sessions rows: ${'reason' in native ? native.reason : ''}; the targets use the Node generator's)`);
    const cRow = async (label: string, hosts: { id: string; ak: SoftAk }[], ratePerSec: number): Promise<Row> => {
      let split: NativeOpenLoopRun['split'];
      const row = await measure(label, async () => {
        const run = await nativeSessions(cSessions!, { dir, url: srv.url, token: srv.token, hosts, pcrs: [PCR0, PCR1], audience: 'ledger', ratePerSec, durationMs: ms(3000) });
        split = run.split;
        return run;
      }, ratePerSec === 0 ? hosts.length : undefined);
      if (split !== undefined) console.log(`    split: challenge answered p50/p99 ${split.challengeMs.join('/')} ms after it was due, session ${split.sessionMs.join('/')} ms after that`);
      ownTime(row);
      return row;
    };
    const eccOpenC = cSessions !== undefined ? await cRow('sessions ECC AK (open, C)', eccHosts, 1000) : undefined;
    const rsaOpenC = cSessions !== undefined ? await cRow('sessions RSA AK (open, C)', rsaHosts, 1000) : undefined;
    if (cSessions !== undefined) sess.push(await cRow('sessions ECC AK (C)', eccHosts, 0));
    for (const rate of (process.env.BENCH_SESSION_RATES ?? '').split(',').filter(Boolean).map(Number)) {
      keysFor(ms(3000));
      splitting = true;
      sess.push(await measure(`sessions ECC AK (open ${rate})`, () => openLoop(sessionOp(client, eccHosts), rate, ms(3000), ECC_HOSTS)));
      splitting = false;
      splitReport(String(rate));
    }
    const eccPeak = Math.max(...sess.filter((r) => r.label.includes('ECC')).map((r) => r.opsPerSec));
    const rsaSessPeak = Math.max(...sess.filter((r) => r.label.includes('RSA')).map((r) => r.opsPerSec));
    const eccNodePeak = Math.max(...sess.filter((r) => r.label.includes('ECC') && r.generator !== 'openloop.c').map((r) => r.opsPerSec));
    // Latency at a load this machine sustains, for comparison with the 1,000/s run.
    const halfRate = Math.max(10, Math.round(eccPeak / 2));
    keysFor(ms(3000));
    const eccHalf = cSessions !== undefined
      ? await cRow('sessions ECC AK (open, half, C)', eccHosts, halfRate)
      : await measure('sessions ECC AK (open, half)', () => openLoop(sessionOp(client, eccHosts), halfRate, ms(3000), ECC_HOSTS));
    const eccOpen = eccOpenC ?? eccOpenNode;
    const rsaOpen = rsaOpenC ?? rsaOpenNode;
    const gen = (r: Row): string => (r.generator === 'openloop.c' ? 'C generator' : 'Node generator');
    const sat = (r: Row): string => (r.saturated ? ' (saturated)' : '');
    console.log(`  ECC AK peak ${fmt(eccPeak)} sessions/s (target ≥ 2,000 = ${ratio(eccPeak, 2000)} of it; Node generator ${fmt(eccNodePeak)}/s), raw HSM ec-p256 sign ${fmt(raw.ecP256)}/s (sessions/raw ${ratio(eccPeak, raw.ecP256)})`);
    console.log(`  RSA AK peak ${fmt(rsaSessPeak)} sessions/s; p99 at 1,000/s offered: ECC ${eccOpen.p99Ms} ms${sat(eccOpen)}, RSA ${rsaOpen.p99Ms} ms${sat(rsaOpen)} (target ≤ 20 ms; ${gen(eccOpen)}${eccOpenC ? `; Node generator ECC ${eccOpenNode.p99Ms} ms${sat(eccOpenNode)}, RSA ${rsaOpenNode.p99Ms} ms${sat(rsaOpenNode)}` : ''})`);
    console.log(`  ECC AK p99 at half the peak (${fmt(eccHalf.targetPerSec ?? 0)}/s): ${eccHalf.p99Ms} ms (${gen(eccHalf)})`);
    out.sessions = {
      rows: [...sess, eccOpenNode, rsaOpenNode, ...(eccOpenC ? [eccOpenC] : []), ...(rsaOpenC ? [rsaOpenC] : []), eccHalf], eccPeak, eccNodePeak, rsaPeak: rsaSessPeak, rawHsmEcSign: raw.ecP256,
      eccP99At1000Ms: eccOpen.p99Ms, rsaP99At1000Ms: rsaOpen.p99Ms, p99At1000Generator: eccOpen.generator, eccNodeP99At1000Ms: eccOpenNode.p99Ms, rsaNodeP99At1000Ms: rsaOpenNode.p99Ms, eccHalfPeakRate: eccHalf.targetPerSec, eccP99AtHalfPeakMs: eccHalf.p99Ms,
      targets: { sessionsPerSec: 2000, p99Ms: 20 },
    };
    }
    client.close();
  } finally {
    if (started) {
      const child = started.child;
      const exited = new Promise((r) => child.once('exit', r));
      child.send({ type: 'stop' } satisfies ToServer);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    await rm(dir, { recursive: true, force: true });
    await hsm.cleanup();
  }
  out.loadavgEnd = loadavg();
  out.seconds = Math.round((performance.now() - t0) / 100) / 10;
  console.log(`\nload average at end ${load()}; ${out.seconds} s in all`);
  console.log(`BENCH_JSON ${JSON.stringify(out)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
