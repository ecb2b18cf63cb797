/**
 * V8 flags for `custos serve`, and the relaunch that applies them.
 *
 * On a machine with few cores, V8's parallel garbage collection hurts the server's latency. A
 * scavenge hands its work to helper threads and waits for all of them; the server's own threads
 * (the event loop, the PKCS#11 workers, the ECDH worker) already keep the cores busy, so a helper
 * that was preempted holds the event loop up until the scheduler runs it again. With
 * `--single-threaded-gc` the event loop does the same work alone, without waiting for anyone.
 * Measured on 2 cores with `BENCH_ONLY=sessions npm run bench` (open-loop sessions at 1,000–1,077/s,
 * runs with and without the flag alternating): p99 14.6–18.0 ms in 9 rows with the flag,
 * 17.4–50.2 ms in 4 rows without; peak sessions/s and key signing unchanged within the noise.
 *
 * V8 takes this flag only on the command line: not from NODE_OPTIONS, and v8.setFlagsFromString
 * after start-up crashes the process at the next collection. So `custos serve` started without it
 * starts itself again with it, as a child that takes over stdio, gets the signals, and whose exit
 * status becomes the launcher's. CUSTOS_GC=parallel keeps V8's default; CUSTOS_GC=single-threaded
 * uses the flag whatever the core count.
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';

/** At most this many cores: single-threaded collection by default. */
export const SINGLE_THREADED_GC_MAX_CPUS = 4;

/** Set in the relaunched child, so that it never relaunches again and watches its parent. */
const RELAUNCHED = 'CUSTOS_RELAUNCHED';

const FORWARDED_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/**
 * The V8 flags `custos serve` runs with, from CUSTOS_GC (auto | single-threaded | parallel).
 * @throws Error naming CUSTOS_GC when it has another value
 */
export function serveV8Flags(env: NodeJS.ProcessEnv = process.env, cpus: number = availableParallelism()): string[] {
  const mode = env['CUSTOS_GC'] ?? 'auto';
  switch (mode) {
    case 'parallel':
      return [];
    case 'single-threaded':
      return ['--single-threaded-gc'];
    case 'auto':
      return cpus <= SINGLE_THREADED_GC_MAX_CPUS ? ['--single-threaded-gc'] : [];
    default:
      throw new Error(`CUSTOS_GC: must be auto, single-threaded or parallel (got ${JSON.stringify(mode)})`);
  }
}

/**
 * For `custos serve` without its V8 flags: runs the same command again in a child with them and
 * returns a promise that never settles (the process exits with the child). Otherwise false, and the
 * caller runs the command itself. In the relaunched child, arranges for it to stop when the
 * launcher dies without passing on a signal (SIGKILL): no server is left behind without a parent.
 */
export function relaunchServeWithV8Flags(argv: readonly string[] = process.argv): false | Promise<never> {
  if (argv[2] !== 'serve') return false;
  if (process.env[RELAUNCHED] === '1') {
    watchLauncher();
    return false;
  }
  let flags: string[];
  try {
    flags = serveV8Flags().filter((f) => !process.execArgv.includes(f));
  } catch (e) {
    process.stderr.write(`custos: ${(e as Error).message}\n`);
    process.exit(2);
  }
  if (flags.length === 0) return false;
  const child = spawn(process.execPath, [...process.execArgv, ...flags, ...argv.slice(1)], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [RELAUNCHED]: '1' },
  });
  for (const signal of FORWARDED_SIGNALS) process.on(signal, () => child.kill(signal));
  return new Promise<never>(() => {
    child.once('error', (e) => {
      process.stderr.write(`custos: could not start the server process: ${e.message}\n`);
      process.exit(1);
    });
    child.once('exit', (code, signal) => {
      if (signal !== null) {
        // Die of the same signal, so that whoever started the launcher sees what happened.
        for (const s of FORWARDED_SIGNALS) process.removeAllListeners(s);
        process.kill(process.pid, signal);
      }
      process.exit(code ?? 1);
    });
  });
}

/** In the relaunched child: the launcher's death closes the IPC channel; stop as on SIGTERM. */
function watchLauncher(): void {
  const channel = process.channel;
  if (channel === undefined) return;
  // The channel must not keep the server alive once it has closed its server and store.
  channel.unref();
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}
