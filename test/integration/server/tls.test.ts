import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../../src/config/config.js';
import { composeService, type Service } from '../../../src/compose.js';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { Metrics } from '../../../src/http/metrics.js';
import { listen } from '../../../src/server.js';

/**
 * HTTPS only when a certificate is configured; client certificates (mTLS) as an alternative to
 * bearer tokens, mapped to roles by subject CN or SAN; plain HTTP refused off loopback.
 * Certificates are made with openssl for this test.
 */
let dir: string;
let service: Service;
let server: Server;
let port = 0;
const log = pino({ level: 'silent' });

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

function makeCert(name: string, subject: string, ca: string, ext: string): void {
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`]);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'custos-tls-'));
  for (const ca of ['server-ca', 'client-ca', 'rogue-ca']) {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${ca}.key`, '-out', `${ca}.crt`, '-days', '2', '-subj', `/CN=${ca}`]);
  }
  makeCert('server', '/CN=localhost', 'server-ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  makeCert('bot', '/CN=rotation-bot', 'client-ca', 'extendedKeyUsage=clientAuth\n');
  makeCert('ledger', '/CN=ledger-7', 'client-ca', 'subjectAltName=URI:spiffe://prod/ledger\nextendedKeyUsage=clientAuth\n');
  makeCert('stranger', '/CN=nobody', 'client-ca', 'extendedKeyUsage=clientAuth\n');
  makeCert('rogue', '/CN=rotation-bot', 'rogue-ca', 'extendedKeyUsage=clientAuth\n');
  writeFileSync(join(dir, 'config.yaml'), [
    'tls:', `  cert: ${join(dir, 'server.crt')}`, `  key: ${join(dir, 'server.key')}`, `  clientCa: ${join(dir, 'client-ca.crt')}`,
    '  clientRoles:', '    - { match: subject-cn, value: rotation-bot, role: operator }', '    - { match: san-uri, value: "spiffe://prod/ledger", role: auditor }', '',
  ].join('\n'));
  const config = loadConfig({ CUSTOS_STATE_DIR: dir, CUSTOS_LISTEN: '127.0.0.1:0' });
  service = await composeService(config, log, { hsm: new MemoryKeyStore(), metrics: new Metrics({ defaultMetrics: false }) });
  ({ server } = await listen(service.app, config, log));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  await service?.close();
  rmSync(dir, { recursive: true, force: true });
});

function get(path: string, opts: { cert?: string; token?: string }): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const r = request(
      {
        host: '127.0.0.1', port, path, method: 'GET', ca: readFileSync(join(dir, 'server-ca.crt')), servername: 'localhost',
        ...(opts.cert ? { cert: readFileSync(join(dir, `${opts.cert}.crt`)), key: readFileSync(join(dir, `${opts.cert}.key`)) } : {}),
        headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
      },
      (res) => {
        let t = '';
        res.on('data', (d: Buffer) => (t += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(t) }));
      },
    );
    r.on('error', reject);
    r.end();
  });
}

describe('TLS and client certificates', () => {
  it('speaks HTTPS only: a plain HTTP request to the port gets no API answer', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status, () => 'refused');
    expect(res).not.toBe(200);
    expect((await get('/healthz', {})).body).toEqual({ status: 'ok' });
  });

  it('maps a client certificate subject CN to its role', async () => {
    expect((await get('/v1/keys', { cert: 'bot' })).status).toBe(200);
    expect((await get('/v1/tokens', { cert: 'bot' })).status).toBe(403);
  });

  it('maps a SAN URI to its role', async () => {
    expect((await get('/v1/audit', { cert: 'ledger' })).status).toBe(200);
    expect((await get('/v1/tokens', { cert: 'ledger' })).status).toBe(403);
  });

  it('refuses a valid certificate no rule maps, and a certificate from another CA with a mapped CN', async () => {
    expect((await get('/v1/keys', { cert: 'stranger' })).status).toBe(401);
    expect((await get('/v1/keys', { cert: 'rogue' })).status).toBe(401);
    expect((await get('/v1/keys', {})).status).toBe(401);
  });

  it('still accepts bearer tokens over TLS', async () => {
    const { token } = await service.deps.tokens.create('system:test', { name: 't', role: 'auditor' });
    expect((await get('/v1/keys', { token })).status).toBe(200);
  });

  it('refuses plain HTTP on a non-loopback address unless forced', async () => {
    const cfg = loadConfig({ CUSTOS_STATE_DIR: mkdtempSync(join(tmpdir(), 'custos-plain-')), CUSTOS_LISTEN: '0.0.0.0:0' });
    await expect(listen(service.app, cfg, log)).rejects.toBeInstanceOf(ConfigError);
    const forced = loadConfig({ CUSTOS_STATE_DIR: cfg.stateDir, CUSTOS_LISTEN: '0.0.0.0:0', CUSTOS_ALLOW_INSECURE_HTTP: 'true' });
    const { server: s, url } = await listen(service.app, forced, log);
    expect(url).toMatch(/^http:\/\//);
    await new Promise<void>((r) => s.close(() => r()));
  });
});
