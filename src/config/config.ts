import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

/**
 * Configuration: an optional YAML file (CUSTOS_CONFIG, else `<stateDir>/config.yaml` when present)
 * with environment overrides on top. Invalid configuration throws ConfigError naming the field;
 * the CLI prints it and exits non-zero. Secrets are never configuration values: the PKCS#11 PIN
 * comes from a file whose path is configured.
 */
export class ConfigError extends Error {
  constructor(readonly field: string, reason: string) {
    super(`invalid configuration: ${field}: ${reason}`);
    this.name = 'ConfigError';
  }
}

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port');

const clientRole = z.strictObject({
  /** Match on the certificate subject CN, or on a SAN entry (DNS, URI or email). */
  match: z.enum(['subject-cn', 'san-dns', 'san-uri', 'san-email']),
  value: z.string().min(1),
  role: z.enum(['admin', 'operator', 'auditor', 'provisioner', 'user']),
});

const fileSchema = z.strictObject({
  listen: hostPort.optional(),
  stateDir: z.string().min(1).optional(),
  databaseUrl: z.string().min(1).optional(),
  policyDir: z.string().min(1).optional(),
  ekCaDir: z.string().min(1).optional(),
  issuer: z.string().min(1).optional(),
  attestationResultKey: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
  bodyLimitBytes: z.number().int().min(1024).max(16 * 1024 * 1024).optional(),
  heapGrowingPercent: z.number().int().min(0).max(1000).optional(),
  allowInsecureHttp: z.boolean().optional(),
  processes: z.number().int().min(1).max(64).optional(),
  pkcs11: z
    .strictObject({
      module: z.string().min(1).optional(),
      tokenLabel: z.string().min(1).max(32).optional(),
      pinFile: z.string().min(1).optional(),
      workers: z.number().int().min(1).max(64).optional(),
      poolSize: z.number().int().min(1).max(4096).optional(),
      sessionCopies: z.enum(['auto', 'on', 'off']).optional(),
    })
    .optional(),
  tls: z
    .strictObject({
      cert: z.string().min(1).optional(),
      key: z.string().min(1).optional(),
      clientCa: z.string().min(1).optional(),
      clientRoles: z.array(clientRole).optional(),
    })
    .optional(),
  audit: z
    .strictObject({
      checkpointEvery: z.number().int().min(1).max(1_000_000).optional(),
      checkpointSeconds: z.number().int().min(1).max(86_400).optional(),
      signingKey: z.string().min(1).optional(),
    })
    .optional(),
  rotation: z
    .strictObject({
      enabled: z.boolean().optional(),
      intervalSeconds: z.number().int().min(1).max(86_400).optional(),
      reconcileGraceSeconds: z.number().int().min(0).max(86_400).optional(),
    })
    .optional(),
});

export type ClientRoleRule = z.infer<typeof clientRole>;

export interface Config {
  listen: { host: string; port: number };
  stateDir: string;
  database: { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string };
  policyDir: string;
  ekCaDir: string;
  issuer: string;
  /** Custos key whose active version signs attestation results (EAR JWTs). */
  attestationResultKey: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  bodyLimitBytes: number;
  /**
   * How far V8 lets the old generation grow past its live size before the next full GC, in
   * percent (`custos serve` sets V8's --heap-growing-percent; 0 leaves V8's own heuristics).
   * See src/lib/v8-heap.ts.
   */
  heapGrowingPercent: number;
  allowInsecureHttp: boolean;
  /**
   * Server processes sharing the listening socket (node:cluster), each with its own HSM sessions
   * and worker threads on the one token and the one database. Node runs JavaScript on one thread
   * per process: with 1, that thread is the limit of every request path (src/cluster.ts).
   */
  processes: number;
  /**
   * `sessionCopies`: sign with session copies of the private keys made inside the token
   * (`auto`: when the module is SoftHSM2); see hsm/README.md.
   */
  pkcs11: { module: string; tokenLabel: string; pinFile: string; workers: number; poolSize: number; sessionCopies: 'auto' | 'on' | 'off' };
  tls: { cert: string; key: string; clientCa?: string; clientRoles: ClientRoleRule[] } | null;
  audit: { checkpointEvery: number; checkpointSeconds: number; signingKey: string };
  rotation: { enabled: boolean; intervalSeconds: number; reconcileGraceSeconds: number };
}

/** See src/lib/v8-heap.ts for why and what was measured. */
export const DEFAULT_HEAP_GROWING_PERCENT = 300;

const ENV_FIELDS: Record<string, string> = {
  CUSTOS_LISTEN: 'listen',
  CUSTOS_STATE_DIR: 'stateDir',
  CUSTOS_DATABASE_URL: 'databaseUrl',
  CUSTOS_POLICY_DIR: 'policyDir',
  CUSTOS_EK_CA_DIR: 'ekCaDir',
  CUSTOS_ISSUER: 'issuer',
  CUSTOS_LOG_LEVEL: 'logLevel',
  CUSTOS_BODY_LIMIT_BYTES: 'bodyLimitBytes',
  CUSTOS_HEAP_GROWING_PERCENT: 'heapGrowingPercent',
  CUSTOS_ALLOW_INSECURE_HTTP: 'allowInsecureHttp',
  CUSTOS_PROCESSES: 'processes',
  CUSTOS_PKCS11_MODULE: 'pkcs11.module',
  CUSTOS_PKCS11_TOKEN_LABEL: 'pkcs11.tokenLabel',
  CUSTOS_PKCS11_PIN_FILE: 'pkcs11.pinFile',
  CUSTOS_PKCS11_WORKERS: 'pkcs11.workers',
  CUSTOS_PKCS11_SESSION_COPIES: 'pkcs11.sessionCopies',
  CUSTOS_TLS_CERT: 'tls.cert',
  CUSTOS_TLS_KEY: 'tls.key',
  CUSTOS_TLS_CLIENT_CA: 'tls.clientCa',
  CUSTOS_AUDIT_CHECKPOINT_EVERY: 'audit.checkpointEvery',
  CUSTOS_AUDIT_CHECKPOINT_SECONDS: 'audit.checkpointSeconds',
  CUSTOS_ROTATION_ENABLED: 'rotation.enabled',
  CUSTOS_ROTATION_INTERVAL_SECONDS: 'rotation.intervalSeconds',
  CUSTOS_RECONCILE_GRACE_SECONDS: 'rotation.reconcileGraceSeconds',
};

const NUMERIC = new Set(['bodyLimitBytes', 'heapGrowingPercent', 'processes', 'pkcs11.workers', 'audit.checkpointEvery', 'audit.checkpointSeconds', 'rotation.intervalSeconds', 'rotation.reconcileGraceSeconds', 'timeScale']);
const BOOLEAN = new Set(['allowInsecureHttp', 'rotation.enabled']);

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur = obj;
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]!] = value;
}

function envValue(field: string, envName: string, raw: string): unknown {
  if (NUMERIC.has(field)) {
    if (!/^\d+$/.test(raw)) throw new ConfigError(field, `${envName} must be a whole number`);
    return Number(raw);
  }
  if (BOOLEAN.has(field)) {
    if (!/^(1|0|true|false|yes|no)$/i.test(raw)) throw new ConfigError(field, `${envName} must be true or false`);
    return /^(1|true|yes)$/i.test(raw);
  }
  return raw;
}

const DEFAULT_SOFTHSM_MODULES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'];

/** Loads configuration from file + environment. `cwd` resolves relative paths. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): Config {
  const stateDirEnv = env.CUSTOS_STATE_DIR;
  const configPath = env.CUSTOS_CONFIG ?? join(resolve(cwd, stateDirEnv ?? '.custos'), 'config.yaml');
  let raw: Record<string, unknown> = {};
  if (env.CUSTOS_CONFIG !== undefined && !existsSync(configPath)) {
    throw new ConfigError('CUSTOS_CONFIG', `file ${configPath} does not exist`);
  }
  if (existsSync(configPath)) {
    let parsed: unknown;
    try {
      parsed = parseYaml(readFileSync(configPath, 'utf8'));
    } catch (e) {
      throw new ConfigError('CUSTOS_CONFIG', `${configPath} is not valid YAML: ${(e as Error).message}`);
    }
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError('CUSTOS_CONFIG', `${configPath} must be a mapping`);
      raw = parsed as Record<string, unknown>;
    }
  }
  for (const [envName, field] of Object.entries(ENV_FIELDS)) {
    const v = env[envName];
    if (v !== undefined && v !== '') setPath(raw, field, envValue(field, envName, v));
  }
  const result = fileSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = issue.path.join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(',') : '(root)');
    throw new ConfigError(field, issue.message);
  }
  const f = result.data;
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(cwd, p));

  const stateDir = abs(f.stateDir ?? '.custos');
  const [host, portText] = splitHostPort(f.listen ?? '127.0.0.1:7800');
  const port = Number(portText);
  if (port < 0 || port > 65535) throw new ConfigError('listen', 'port out of range');

  const dbUrl = f.databaseUrl ?? `sqlite:${join(stateDir, 'custos.db')}`;
  let database: Config['database'];
  if (dbUrl.startsWith('sqlite:')) {
    const p = dbUrl.slice('sqlite:'.length);
    if (p === '') throw new ConfigError('databaseUrl', 'sqlite: needs a path');
    database = { kind: 'sqlite', path: p === ':memory:' ? p : abs(p) };
  } else if (/^postgres(ql)?:\/\//.test(dbUrl)) {
    database = { kind: 'postgres', url: dbUrl };
  } else {
    throw new ConfigError('databaseUrl', 'must start with sqlite: or postgres://');
  }

  const module = f.pkcs11?.module ?? DEFAULT_SOFTHSM_MODULES.find((m) => existsSync(m)) ?? DEFAULT_SOFTHSM_MODULES[0]!;
  const tls = f.tls;
  if (tls && (tls.cert === undefined) !== (tls.key === undefined)) {
    throw new ConfigError(tls.cert === undefined ? 'tls.cert' : 'tls.key', 'TLS needs both a certificate and a key');
  }
  if (tls?.clientCa !== undefined && tls.cert === undefined) throw new ConfigError('tls.clientCa', 'client certificates need tls.cert and tls.key');

  const listenHost = host;
  return {
    listen: { host: listenHost, port },
    stateDir,
    database,
    policyDir: abs(f.policyDir ?? 'policies'),
    ekCaDir: (f.ekCaDir ?? 'attestation/ek-ca').split(':').filter(Boolean).map(abs).join(':'),
    issuer: f.issuer ?? `custos://${listenHost}:${port}`,
    attestationResultKey: f.attestationResultKey ?? 'attestation-result',
    logLevel: f.logLevel ?? 'info',
    bodyLimitBytes: f.bodyLimitBytes ?? 64 * 1024,
    heapGrowingPercent: f.heapGrowingPercent ?? DEFAULT_HEAP_GROWING_PERCENT,
    allowInsecureHttp: f.allowInsecureHttp ?? false,
    processes: f.processes ?? 1,
    pkcs11: {
      module: abs(module),
      tokenLabel: f.pkcs11?.tokenLabel ?? 'custos',
      pinFile: abs(f.pkcs11?.pinFile ?? join(stateDir, 'hsm', 'pin')),
      workers: f.pkcs11?.workers ?? 2,
      poolSize: f.pkcs11?.poolSize ?? 128,
      sessionCopies: f.pkcs11?.sessionCopies ?? 'auto',
    },
    tls:
      tls?.cert !== undefined && tls.key !== undefined
        ? { cert: abs(tls.cert), key: abs(tls.key), ...(tls.clientCa ? { clientCa: abs(tls.clientCa) } : {}), clientRoles: tls.clientRoles ?? [] }
        : null,
    audit: {
      checkpointEvery: f.audit?.checkpointEvery ?? 1000,
      checkpointSeconds: f.audit?.checkpointSeconds ?? 60,
      signingKey: f.audit?.signingKey ?? 'audit-checkpoint',
    },
    rotation: {
      enabled: f.rotation?.enabled ?? true,
      intervalSeconds: f.rotation?.intervalSeconds ?? 60,
      reconcileGraceSeconds: f.rotation?.reconcileGraceSeconds ?? 120,
    },
  };
}

function splitHostPort(s: string): [string, string] {
  const i = s.lastIndexOf(':');
  let host = s.slice(0, i);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return [host, s.slice(i + 1)];
}

/** Loopback addresses, where plain HTTP is allowed without forcing. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Reads the PKCS#11 user PIN from its file (trailing newline dropped). Never logged. */
export function readPin(pinFile: string): string {
  let pin: string;
  try {
    pin = readFileSync(pinFile, 'utf8').replace(/\r?\n$/, '');
  } catch {
    throw new ConfigError('pkcs11.pinFile', `cannot read ${pinFile}`);
  }
  if (pin.length === 0) throw new ConfigError('pkcs11.pinFile', `${pinFile} is empty`);
  return pin;
}
