import type { Config } from '../config/config.js';
import { CustosError } from '../lib/errors.js';
import { SqliteStore } from './sqlite/sqlite-store.js';
import type { Store } from './store.js';

/** Opens the store named by the configuration. */
export function openStore(database: Config['database']): Store {
  if (database.kind === 'sqlite') return new SqliteStore(database.path);
  throw new CustosError(
    'ERR_NOT_SUPPORTED',
    'databaseUrl: postgres:// is recognised but the PostgreSQL store is not yet supported; use sqlite:<path>',
  );
}
