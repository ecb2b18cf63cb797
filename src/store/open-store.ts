import type { Config } from '../config/config.js';
import { CustosError } from '../lib/errors.js';
import { SqliteStore, type SqliteStoreOptions } from './sqlite/sqlite-store.js';
import type { Store } from './store.js';

/** Opens the store named by the configuration (`serving`: a long-running server process). */
export function openStore(database: Config['database'], opts: { serving?: boolean } = {}): Store {
  if (database.kind === 'sqlite') {
    const o: SqliteStoreOptions = opts.serving ? { backgroundCheckpointMs: 250 } : {};
    return new SqliteStore(database.path, o);
  }
  throw new CustosError(
    'ERR_NOT_SUPPORTED',
    'databaseUrl: postgres:// is recognised but the PostgreSQL store is not yet supported; use sqlite:<path>',
  );
}
