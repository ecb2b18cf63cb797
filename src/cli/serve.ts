import { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { createLogger } from '../lib/logger.js';
import { applyHeapGrowingPercent } from '../lib/v8-heap.js';

/** `custos serve`: starts the service with the configuration from file + environment. */
export function serveCommand(): Command {
  return new Command('serve').description('run the custos server').action(async () => {
    const config = loadConfig();
    applyHeapGrowingPercent(config.heapGrowingPercent);
    const log = createLogger(config.logLevel);
    // Loaded on demand so that the client commands start fast.
    const { composeService } = await import('../compose.js');
    const { listen } = await import('../server.js');
    const service = await composeService(config, log);
    const { server, url } = await listen(service.app, config, log);
    service.startBackground();
    // One parseable line on stdout for scripts that start the server and wait for it.
    process.stdout.write(JSON.stringify({ listening: url }) + '\n');
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      server.close(() => {
        void service.close().finally(() => process.exit(0));
      });
      server.closeAllConnections?.();
      setTimeout(() => process.exit(1), 10_000).unref();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}
