import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../src/config/config.js';
import { composeService, type Service } from '../../src/compose.js';
import type { KeyStore } from '../../src/hsm/key-store.js';
import type { Clock } from '../../src/lib/clock.js';
import type { Role } from '../../src/store/records.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { Metrics } from '../../src/http/metrics.js';

export interface TestService {
  url: string;
  dir: string;
  config: Config;
  store: SqliteStore;
  service: Service;
  tokens: Record<Role, string>;
  /** JSON call; `token` null sends no Authorization header. */
  call(method: string, path: string, body?: unknown, token?: string | null, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Headers }>;
  close(): Promise<void>;
}

/**
 * Starts a custos server in-process on a free loopback port with a temp SQLite store and the
 * given KeyStore (a real SoftHSM2-backed one in integration tests). One API token per role.
 */
export async function startTestService(opts: { hsm: KeyStore; clock?: Clock; env?: NodeJS.ProcessEnv }): Promise<TestService> {
  const dir = await mkdtemp(join(tmpdir(), 'custos-svc-'));
  const config = loadConfig({ CUSTOS_STATE_DIR: dir, CUSTOS_LISTEN: '127.0.0.1:0', CUSTOS_LOG_LEVEL: 'silent', ...opts.env }, process.cwd());
  const store = new SqliteStore(join(dir, 'custos.db'));
  const log = pino({ level: 'silent' });
  const service = await composeService(config, log, { hsm: opts.hsm, store, metrics: new Metrics({ defaultMetrics: false }), ...(opts.clock ? { clock: opts.clock } : {}) });
  const server: Server = await new Promise((resolve) => {
    const s = service.app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const tokens = {} as Record<Role, string>;
  for (const role of ['admin', 'operator', 'auditor', 'provisioner', 'user'] as Role[]) {
    tokens[role] = (await service.deps.tokens.create('system:test', { name: `test ${role}`, role })).token;
  }
  const call: TestService['call'] = async (method, path, body, token = tokens.admin, headers = {}) => {
    const h: Record<string, string> = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    let payload: string | undefined;
    if (body !== undefined) {
      payload = typeof body === 'string' ? body : JSON.stringify(body);
      h['content-type'] ??= 'application/json';
    }
    const res = await fetch(url + path, { method, headers: h, ...(payload !== undefined ? { body: payload } : {}) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  return {
    url, dir, config, store, service, tokens, call,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await service.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
