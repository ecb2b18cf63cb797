/**
 * Starts a private swtpm (TPM 2.0) for a test: fresh state in a temp folder with RSA-2048 and
 * ECC P-384 EK certificates and a platform certificate from a local CA (made by
 * attestation/swtpm/create-tpm.sh, offline), listening on free TCP ports on 127.0.0.1.
 * The process is killed on stop() and when the test process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const CREATE = join(ROOT, 'attestation/swtpm/create-tpm.sh');

/** A running swtpm. */
export interface Swtpm {
  /** TCTI string for tpm2-tools (`swtpm:host=127.0.0.1,port=P`). */
  readonly tcti: string;
  /** Command port (control port is port + 1). */
  readonly port: number;
  /** Temp folder holding the TPM state and the local CA. */
  readonly dir: string;
  /** PEM files of the local root CA and the intermediate that issued the EK certificates. */
  readonly localCaCerts: string[];
  /** Environment for tpm2-tools child processes (TPM2TOOLS_TCTI set). */
  readonly env: NodeJS.ProcessEnv;
  /** Kills swtpm and removes the temp folder. */
  stop(): Promise<void>;
  /**
   * Restarts swtpm on the same ports and state (a TPM reset: resetCount goes up). By default the
   * TPM is shut down orderly first (TPM2_Shutdown(CLEAR)); with `{ orderly: false }` it is killed
   * like a power loss, and its next quotes report clockInfo.safe = NO.
   */
  restart(opts?: { orderly?: boolean }): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const p of live) p.kill('SIGKILL');
  });
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', rej);
    p.on('exit', (code) => (code === 0 ? res() : rej(new Error(`${cmd} exited ${code}: ${err.slice(-2000)}`))));
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

async function freePortPair(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await new Promise<number>((res, rej) => {
      const s = createServer();
      s.once('error', rej);
      s.listen(0, '127.0.0.1', () => {
        const a = s.address();
        const p = typeof a === 'object' && a ? a.port : 0;
        s.close(() => res(p));
      });
    });
    if (port > 0 && port < 65535 && (await portFree(port + 1))) return port;
  }
  throw new Error('no free port pair for swtpm');
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((res) => {
    const c = connect({ host: '127.0.0.1', port });
    c.once('connect', () => {
      c.destroy();
      res(true);
    });
    c.once('error', () => res(false));
  });
}

function spawnSwtpm(dir: string, port: number): ChildProcess {
  const p = spawn(
    'swtpm',
    [
      'socket', '--tpm2',
      '--tpmstate', `dir=${join(dir, 'tpm')}`,
      '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`,
      '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
      '--flags', 'not-need-init,startup-clear',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  live.add(p);
  p.on('exit', () => live.delete(p));
  // If this test process dies without running its exit hook (SIGKILL, crash), a watchdog ends
  // swtpm within a second; it also ends by itself when swtpm exits.
  if (p.pid !== undefined) {
    const w = spawn('sh', ['-c', 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill "$2" 2>/dev/null; exit 0', 'swtpm-watchdog', String(process.pid), String(p.pid)], {
      stdio: 'ignore',
      detached: true,
    });
    w.unref();
  }
  return p;
}

async function waitUp(p: ChildProcess, port: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (p.exitCode !== null) throw new Error(`swtpm exited with ${p.exitCode}`);
    // Probe the control port: the command port serves one client at a time.
    if (await canConnect(port + 1)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('swtpm did not start');
}

function kill(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const t = setTimeout(() => p.kill('SIGKILL'), 3000);
    p.once('exit', () => {
      clearTimeout(t);
      res();
    });
    p.kill('SIGTERM');
  });
}

/**
 * Creates a fresh TPM state (with EK and platform certificates) and starts swtpm on it.
 * Banks: sha1 and sha256 are active.
 */
export async function startSwtpm(): Promise<Swtpm> {
  installExitHook();
  const dir = await mkdtemp(join(tmpdir(), 'custos-swtpm-'));
  try {
    await run('sh', [CREATE, dir, 'sha1,sha256']);
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  let port = 0;
  let proc: ChildProcess | undefined;
  for (let attempt = 0; attempt < 5 && proc === undefined; attempt++) {
    port = await freePortPair();
    const p = spawnSwtpm(dir, port);
    try {
      await waitUp(p, port);
      proc = p;
    } catch {
      await kill(p);
    }
  }
  if (proc === undefined) {
    await rm(dir, { recursive: true, force: true });
    throw new Error('could not start swtpm');
  }
  const tcti = `swtpm:host=127.0.0.1,port=${port}`;
  let current: ChildProcess = proc;
  return {
    tcti,
    port,
    dir,
    localCaCerts: [join(dir, 'localca/swtpm-localca-rootca-cert.pem'), join(dir, 'localca/issuercert.pem')],
    env: { ...process.env, TPM2TOOLS_TCTI: tcti },
    async stop() {
      await kill(current);
      await rm(dir, { recursive: true, force: true });
    },
    async restart(opts?: { orderly?: boolean }) {
      if (opts?.orderly !== false) await run('tpm2_shutdown', ['-c'], { ...process.env, TPM2TOOLS_TCTI: tcti });
      await kill(current);
      for (let i = 0; i < 50 && !((await portFree(port)) && (await portFree(port + 1))); i++) await new Promise((r) => setTimeout(r, 100));
      current = spawnSwtpm(dir, port);
      await waitUp(current, port);
    },
  };
}
