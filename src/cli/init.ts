import { Command } from 'commander';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TokenService } from '../auth/token-service.js';
import { loadConfig } from '../config/config.js';
import { systemClock } from '../lib/clock.js';
import { openStore } from '../store/open-store.js';
import { output, type ClientOptions } from './client.js';

/**
 * `custos init`: creates the state folder (0700) and the database, and writes the first admin
 * API token to `$CUSTOS_STATE_DIR/admin.token` (0600). The token is never printed. Running it
 * again changes nothing unless --new-admin-token is given.
 */
export function initCommand(globals: () => ClientOptions): Command {
  return new Command('init')
    .description('create the state folder, the database and the first admin API token')
    .option('--new-admin-token', 'issue a fresh admin token even if one was issued before')
    .action(async (o: { newAdminToken?: boolean }) => {
      const config = loadConfig();
      mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
      chmodSync(config.stateDir, 0o700);
      const store = openStore(config.database);
      try {
        const tokenFile = join(config.stateDir, 'admin.token');
        const issued = await store.getMeta('admin-token-issued');
        let created = false;
        if (!issued || o.newAdminToken || !existsSync(tokenFile)) {
          const tokens = new TokenService(store, systemClock);
          const { id, token } = await tokens.create('system:init', { name: 'initial admin', role: 'admin' });
          writeFileSync(tokenFile, token + '\n', { mode: 0o600 });
          chmodSync(tokenFile, 0o600);
          await store.tx((t) => t.setMeta('admin-token-issued', id));
          created = true;
        }
        output(globals().json, { stateDir: config.stateDir, database: config.database.kind, adminTokenFile: tokenFile, created }, () =>
          created ? `state in ${config.stateDir}; admin API token written to ${tokenFile} (mode 0600)` : `state in ${config.stateDir} already initialised; admin token file ${tokenFile}`,
        );
      } finally {
        await store.close();
      }
    });
}
