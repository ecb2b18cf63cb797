import cluster from 'node:cluster';
import { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { createLogger } from '../lib/logger.js';
import { applyHeapGrowingPercent } from '../lib/v8-heap.js';

/**
 * `custos serve`: starts the service with the configuration from file + environment. With
 * `processes` > 1 this process becomes the primary of a cluster (src/cluster.ts) and each server
 * process runs this same command.
 */
export function serveCommand(): Command {
  return new Command('serve').description('run the custos server').action(async () => {
    const config = loadConfig();
    applyHeapGrowingPercent(config.heapGrowingPercent);
    const base = createLogger(config.logLevel);
    if (config.processes > 1 && cluster.isPrimary) return runPrimary(config.processes, base);
    // Loaded on demand so that the client commands start fast.
    const { composeService } = await import('../compose.js');
    const { listen } = await import('../server.js');
    const { joinCluster, processIndex } = await import('../cluster.js');
    // Each process of a cluster names itself in its log lines.
    const index = processIndex();
    const log = index === null ? base : base.child({ process: index });
    let started;
    try {
      const service = await composeService(config, log);
      started = { service, ...(await listen(service.app, config, log)) };
    } catch (e) {
      // A process of a cluster that cannot start must exit, though the IPC channel to the
      // primary keeps it alive: with the exit code `custos` sets for the error (once the error
      // has gone up to it), which the primary then exits with.
      if (cluster.isWorker) setTimeout(() => process.exit(), 200);
      throw e;
    }
    const { service, server, url } = started;
    let stopping = false;
    const stop = (why: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ why }, 'shutting down');
      server.close(() => {
        void service.close().finally(() => process.exit(0));
      });
      server.closeAllConnections?.();
      setTimeout(() => process.exit(1), 10_000).unref();
    };
    const member = joinCluster(service.deps.metrics.registry, () => stop('the primary process asked'));
    // Background work runs once per deployment host: in the only process, or in process 0.
    if (member === null || member.index === 0) service.startBackground();
    if (member) {
      service.deps.metrics.reportGroup(member.groupMetrics);
      member.listening(url);
      // A terminal's Ctrl-C reaches every process of the group: the primary coordinates.
      process.on('SIGINT', () => undefined);
    } else {
      // One parseable line on stdout for scripts that start the server and wait for it.
      process.stdout.write(JSON.stringify({ listening: url }) + '\n');
      process.on('SIGINT', () => stop('SIGINT'));
    }
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
}

async function runPrimary(processes: number, log: ReturnType<typeof createLogger>): Promise<void> {
  const { startCluster, ClusterStartError } = await import('../cluster.js');
  let group;
  try {
    group = await startCluster({ processes, log });
  } catch (e) {
    if (e instanceof ClusterStartError) {
      process.stderr.write(`custos: ${e.message}\n`);
      process.exit(e.exitCode);
    }
    throw e;
  }
  process.stdout.write(JSON.stringify({ listening: group.url, processes }) + '\n');
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down the server processes');
    void group.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
