/**
 * Schema migrations, in order. The SQL is kept portable between SQLite and PostgreSQL: TEXT and
 * INTEGER (BIGINT-compatible) columns only, timestamps as RFC 3339 text, binary as base64 text,
 * partial unique indexes for invariants both engines enforce.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'keys, tokens, audit',
    sql: `
CREATE TABLE keys (
  name TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  purpose TEXT NOT NULL,
  rotation_policy TEXT,
  labels TEXT NOT NULL,
  created_at TEXT NOT NULL,
  next_version INTEGER NOT NULL
);
CREATE TABLE key_versions (
  key_name TEXT NOT NULL REFERENCES keys(name),
  version INTEGER NOT NULL,
  state TEXT NOT NULL,
  kid TEXT NOT NULL UNIQUE,
  hsm_id TEXT NOT NULL UNIQUE,
  pkcs11_uri TEXT NOT NULL,
  public_key TEXT,
  created_at TEXT NOT NULL,
  activated_at TEXT,
  deactivated_at TEXT,
  destroy_at TEXT,
  destroyed_at TEXT,
  compromised_at TEXT,
  PRIMARY KEY (key_name, version)
);
-- Exactly one active version per key, enforced by the database for every process.
CREATE UNIQUE INDEX key_versions_one_active ON key_versions (key_name) WHERE state = 'active';
CREATE UNIQUE INDEX key_versions_one_pre_active ON key_versions (key_name) WHERE state = 'pre-active';
CREATE TABLE hsm_intents (
  id TEXT PRIMARY KEY,
  op TEXT NOT NULL,
  hsm_id TEXT NOT NULL,
  key_name TEXT NOT NULL,
  version INTEGER NOT NULL,
  actor TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE api_tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL,
  created_by TEXT NOT NULL,
  expires_at TEXT,
  revoked_at TEXT
);
CREATE TABLE audit_events (
  seq INTEGER PRIMARY KEY,
  time TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  subject TEXT NOT NULL,
  outcome TEXT NOT NULL,
  details TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE TABLE audit_checkpoints (
  seq INTEGER PRIMARY KEY,
  hash TEXT NOT NULL,
  time TEXT NOT NULL,
  kid TEXT NOT NULL,
  alg TEXT NOT NULL,
  signature TEXT NOT NULL
);
CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
`,
  },
  {
    version: 2,
    name: 'hosts, enrollments, nonces, sessions, leases',
    sql: `
CREATE TABLE hosts (
  id TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  ak_name TEXT NOT NULL UNIQUE,
  ak_public TEXT NOT NULL,
  ak_qualified_name TEXT NOT NULL,
  ek_public_hash TEXT NOT NULL,
  ek_certificate_subject TEXT,
  ek_certificate_issuer TEXT,
  labels TEXT NOT NULL,
  policy_id TEXT NOT NULL,
  enrolled_at TEXT NOT NULL,
  revoked_at TEXT,
  last_attestation TEXT,
  last_clock TEXT
);
CREATE INDEX hosts_ek ON hosts (ek_public_hash);
CREATE TABLE enrollments (
  id TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  ak_public TEXT NOT NULL,
  ak_name TEXT NOT NULL,
  ak_qualified_name TEXT NOT NULL,
  ek_public_hash TEXT NOT NULL,
  ek_certificate_subject TEXT,
  ek_certificate_issuer TEXT,
  policy_id TEXT NOT NULL,
  secret_hash TEXT NOT NULL,
  labels TEXT NOT NULL,
  provisioning_token_id TEXT,
  actor TEXT NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  host_id TEXT
);
CREATE TABLE provisioning_tokens (
  id TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL,
  created_by TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  uses_left INTEGER NOT NULL,
  labels TEXT NOT NULL
);
CREATE TABLE nonces (
  nonce_hash TEXT PRIMARY KEY,
  host_id TEXT NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL
);
CREATE INDEX nonces_expiry ON nonces (expires_at);
CREATE TABLE sessions (
  jti TEXT PRIMARY KEY,
  host_id TEXT NOT NULL,
  audience TEXT NOT NULL,
  kid TEXT NOT NULL,
  key_name TEXT NOT NULL,
  key_version INTEGER NOT NULL,
  cnf_jkt TEXT NOT NULL,
  issued_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  revoked_at TEXT
);
CREATE INDEX sessions_host ON sessions (host_id);
CREATE TABLE leases (
  name TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  until TEXT NOT NULL
);
`,
  },
  {
    version: 3,
    name: 'nonces by host',
    sql: `CREATE INDEX nonces_host ON nonces (host_id, expires_at);`,
  },
  {
    version: 4,
    name: 'reserved keys',
    sql: `ALTER TABLE keys ADD COLUMN reserved_for TEXT;`,
  },
  {
    version: 5,
    name: 'AES-GCM invocations per version',
    sql: `ALTER TABLE key_versions ADD COLUMN encryptions INTEGER NOT NULL DEFAULT 0;`,
  },
  {
    version: 6,
    name: 'reserved keys by use',
    sql: `CREATE INDEX keys_reserved ON keys (reserved_for) WHERE reserved_for IS NOT NULL;`,
  },
];
