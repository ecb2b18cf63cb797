import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOpenLoop, nativeOpenLoop, nativeSessions } from '../../../bench/openloop.js';
import { checkAkPublic } from '../../../src/attestation/ak.js';
import { verifyQuote, type QuoteCounters } from '../../../src/attestation/quote.js';
import { parseEphemeralJwk, sessionExtraData } from '../../../src/sessions/ephemeral-key.js';
import { SoftAk } from '../../helpers/soft-tpm.js';

/**
 * A server whose answer to the n-th request (from 1) `answer` decides. The generator's warm-up
 * requests (one GET /healthz per connection before the clock starts) are answered here and not
 * counted; `order` says what came in which order ('warm' or 'op').
 */
async function serve(answer: (n: number, req: IncomingMessage, body: string, res: ServerResponse) => void): Promise<{ server: Server; url: string; order: ('warm' | 'op')[] }> {
  let n = 0;
  const order: ('warm' | 'op')[] = [];
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/healthz') {
      order.push('warm');
      req.resume();
      json(res, 200, { status: 'ok' });
      return;
    }
    order.push('op');
    const k = ++n;
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => answer(k, req, body, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, order };
}

const json = (res: ServerResponse, status: number, body: unknown): void => {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
};

describe('bench/openloop.c (the C open-loop generator)', () => {
  let dir: string;
  let binary: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'custos-openloop-'));
    const built = buildOpenLoop(dir);
    if (!('path' in built)) throw new Error(built.reason);
    binary = built.path;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('sends every due request with the token and body, and counts a slow answer from when it was due', async () => {
    const seen: { auth: string | undefined; body: string; type: string | undefined }[] = [];
    const { server, url, order } = await serve((n, req, body, res) => {
      seen.push({ auth: req.headers.authorization, body, type: req.headers['content-type'] });
      // The fifth answer is held back 150 ms.
      setTimeout(() => json(res, 200, { signature: 'x' }), n === 5 ? 150 : 0);
    });
    try {
      const r = await nativeOpenLoop(binary, { url, path: '/v1/keys/k/sign', token: 'not-a-real-token', body: { digest: 'AAAA' }, ratePerSec: 200, durationMs: 1000, connections: 4 });
      expect(r.ok).toBe(200);
      expect(r.errors).toBe(0);
      expect(r.saturated).toBeUndefined();
      expect(seen).toHaveLength(200);
      // Each connection carried its warm-up request before the first operation went out.
      expect(order.slice(0, 4)).toEqual(['warm', 'warm', 'warm', 'warm']);
      expect(order.filter((o) => o === 'warm')).toHaveLength(4);
      expect(seen.every((s) => s.auth === 'Bearer not-a-real-token' && s.body === '{"digest":"AAAA"}' && s.type === 'application/json')).toBe(true);
      // Node's timer counts its 150 ms from the event loop's cached clock, which can be a little
      // behind: the hold may be a fraction of a millisecond short in real time.
      expect(r.maxMs).toBeGreaterThanOrEqual(140);
      expect(r.p50Ms).toBeLessThan(50);
    } finally {
      server.close();
    }
  });

  it('counts answers outside 2xx as errors, not as successes', async () => {
    const { server, url } = await serve((_n, _req, _body, res) => json(res, 503, { error: { code: 'ERR_HSM_UNAVAILABLE' } }));
    try {
      const r = await nativeOpenLoop(binary, { url, path: '/x', token: 't', body: {}, ratePerSec: 100, durationMs: 500, connections: 2 });
      expect(r.ok).toBe(0);
      expect(r.errors).toBe(50);
      expect(r.firstError).toMatch(/50 non-2xx/);
    } finally {
      server.close();
    }
  });

  it('counts a connection the server drops as an error and goes on with a new one', async () => {
    const { server, url } = await serve((n, req, _body, res) => {
      if (n === 3) req.socket.destroy();
      else json(res, 200, {});
    });
    try {
      const r = await nativeOpenLoop(binary, { url, path: '/x', token: 't', body: {}, ratePerSec: 100, durationMs: 500, connections: 1 });
      expect(r.errors).toBe(1);
      expect(r.ok).toBe(49);
    } finally {
      server.close();
    }
  });

  it('replaces an idle connection the server closed without counting an error or losing a request', async () => {
    // Keep-alive closed after 50 ms of idleness: with 8 connections at 40/s, most of them sit
    // idle that long between uses and are closed under the generator.
    const { server, url, order } = await serve((_n, _req, _body, res) => json(res, 200, {}));
    server.keepAliveTimeout = 50;
    let accepted = 0;
    server.on('connection', () => accepted++);
    try {
      const r = await nativeOpenLoop(binary, { url, path: '/x', token: 't', body: {}, ratePerSec: 40, durationMs: 1500, connections: 8 });
      // The server did close idle connections, and the generator opened new ones.
      expect(accepted).toBeGreaterThan(8);
      expect(r.errors).toBe(0);
      expect(r.ok).toBe(60);
      expect(order.filter((o) => o === 'op')).toHaveLength(60);
      // Its own time is a part of each latency, never more.
      expect(r.own.p99Ms).toBeGreaterThanOrEqual(0);
      expect(r.lessOwn.p99Ms).toBeLessThanOrEqual(r.p99Ms);
      // A count of operations, whatever the machine's load made of their latencies.
      expect(Number.isInteger(r.over10Ms) && r.over10Ms >= 0 && r.over10Ms <= r.ok).toBe(true);
    } finally {
      server.close();
    }
  });

  it('stops and says so when the server cannot keep up', async () => {
    const { server, url } = await serve((_n, _req, _body, res) => setTimeout(() => json(res, 200, {}), 1000));
    try {
      const r = await nativeOpenLoop(binary, { url, path: '/x', token: 't', body: {}, ratePerSec: 400, durationMs: 3000, connections: 2 });
      expect(r.saturated).toBe(true);
      expect(r.ok).toBeLessThan(10);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

/**
 * Sessions mode (built with libcrypto): the generator plays enclaves. A stand-in for custos checks
 * each session request the way custos does — verifyQuote against the host's software AK, with
 * extraData = SHA-256(nonce ‖ thumbprint of the ephemeral key) and the host's last clock — so a
 * generator that sent quotes custos would refuse fails here.
 */
describe('bench/openloop.c as the sessions generator', () => {
  const PCRS = [Buffer.alloc(32, 0x11), Buffer.alloc(32, 0x22)];
  // Built while the tests are collected, so that a machine without OpenSSL's headers (where the
  // bench prints the Node generator's sessions rows alone) reports these tests as skipped.
  // `make test` installs libssl-dev.
  const dir = mkdtempSync(join(tmpdir(), 'custos-openloop-'));
  const built = buildOpenLoop(dir);
  const binary = 'sessions' in built && built.sessions ? built.path : '';
  const withSessions = it.runIf(binary !== '');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * A stand-in for custos's challenge and session endpoints; `refuse` answers every session 403.
   * Sessions are answered after 30 ms, so that operations overlap and every connection (and so
   * every host) gets its turn.
   */
  async function custos(hosts: { id: string; ak: SoftAk }[], refuse = false) {
    const nonces = new Map<string, string>(); // nonce (base64) → host id, while unused
    const last = new Map<string, QuoteCounters>();
    const jkts = new Set<string>();
    const failures: string[] = [];
    let sessions = 0;
    const { server, url } = await serve((_n, req, body, res) => {
      if (req.headers.authorization !== 'Bearer bench-token') return json(res, 401, {});
      const b = JSON.parse(body) as Record<string, unknown>;
      if (req.url === '/v1/challenges') {
        const nonce = randomBytes(32).toString('base64');
        nonces.set(nonce, b['hostId'] as string);
        return json(res, 200, { nonce, expiresAt: new Date(Date.now() + 60_000).toISOString() });
      }
      sessions++;
      const host = hosts.find((h) => h.id === b['hostId']);
      const nonce = b['nonce'] as string;
      const why: string[] = [];
      if (host === undefined || nonces.get(nonce) !== host.id) why.push('nonce not issued to this host');
      nonces.delete(nonce);
      if (b['audience'] !== 'ledger') why.push('audience');
      let eph;
      try {
        eph = parseEphemeralJwk(b['ephemeralPublicKey']);
        if (jkts.has(eph.thumbprint.toString('hex'))) why.push('ephemeral key used before');
        jkts.add(eph.thumbprint.toString('hex'));
      } catch (e) {
        why.push(`ephemeral key: ${(e as Error).message}`);
      }
      if (host !== undefined && eph !== undefined) {
        const pcrs = b['pcrs'] as { sha256: Record<string, string> };
        const v = verifyQuote({
          akPublic: checkAkPublic(host.ak.tpm2bPublic),
          quote: Buffer.from(b['quote'] as string, 'base64'),
          signature: Buffer.from(b['signature'] as string, 'base64'),
          pcrs: { sha256: Object.fromEntries(Object.entries(pcrs.sha256).map(([k, v]) => [k, Buffer.from(v, 'hex')])) },
          expectedExtraData: sessionExtraData(Buffer.from(nonce, 'base64'), eph.thumbprint),
          requiredSelection: { bank: 'sha256', indices: [0, 1] },
          referenceValues: { 0: [PCRS[0]!], 1: [PCRS[1]!] },
          expectedQualifiedSigner: host.ak.qualifiedName,
          ...(last.has(host.id) ? { previous: last.get(host.id)! } : {}),
        });
        why.push(...v.failures.map((f) => f.code));
        if (v.ok) last.set(host.id, v.parsed.counters);
      }
      if (why.length > 0) failures.push(...why);
      setTimeout(() => json(res, refuse || why.length > 0 ? 403 : 201, { token: 'x' }), 30);
    });
    return { server, url, failures, last, count: () => sessions };
  }

  withSessions('makes sessions custos accepts, open loop: fresh nonce and ephemeral key each, quotes of ECC and RSA AKs', async () => {
    const hosts = [{ id: 'h-ecc-0', ak: new SoftAk('ecc') }, { id: 'h-rsa', ak: new SoftAk('rsa') }, { id: 'h-ecc-1', ak: new SoftAk('ecc') }];
    // A quote made before the run: the generator's must come after it.
    hosts[0]!.ak.quote(Buffer.alloc(32), PCRS);
    const c = await custos(hosts);
    try {
      const r = await nativeSessions(binary, { dir, url: c.url, token: 'bench-token', hosts, pcrs: PCRS, audience: 'ledger', ratePerSec: 100, durationMs: 1000 });
      expect(c.failures).toEqual([]);
      // The file that carried the AKs' private keys is gone.
      expect(existsSync(join(dir, 'sessions.txt'))).toBe(false);
      expect(r.ok).toBe(100);
      expect(r.errors).toBe(0);
      expect(c.count()).toBe(100);
      expect(r.split?.challengeMs[0]).toBeGreaterThan(0);
      expect(r.split?.sessionMs[1]).toBeGreaterThanOrEqual(r.split!.sessionMs[0]);
      // Every host had sessions; Node's quotes after the run still go forward from the generator's last one.
      expect([...c.last.keys()].sort()).toEqual(hosts.map((h) => h.id).sort());
      for (const h of hosts) {
        const q = Buffer.from(h.ak.quote(Buffer.alloc(32), PCRS).quote, 'base64');
        const clock = q.readBigUInt64BE(8 + q.readUInt16BE(6) + 2 + 32);
        expect(clock).toBeGreaterThan(c.last.get(h.id)!.clock);
      }
    } finally {
      c.server.close();
    }
  });

  withSessions('runs a closed loop for the duration: every connection goes again as soon as it is answered', async () => {
    const hosts = [{ id: 'h0', ak: new SoftAk('ecc') }, { id: 'h1', ak: new SoftAk('ecc') }];
    const c = await custos(hosts);
    try {
      const t0 = performance.now();
      const r = await nativeSessions(binary, { dir, url: c.url, token: 'bench-token', hosts, pcrs: PCRS, audience: 'ledger', ratePerSec: 0, durationMs: 500 });
      expect(performance.now() - t0).toBeGreaterThanOrEqual(500);
      expect(c.failures).toEqual([]);
      expect(r.errors).toBe(0);
      expect(r.ok).toBe(c.count());
      expect(r.ok).toBeGreaterThan(20);
      expect(r.targetPerSec).toBeUndefined();
    } finally {
      c.server.close();
    }
  });

  withSessions('counts a refused session as an error, not a success', async () => {
    const hosts = [{ id: 'h0', ak: new SoftAk('ecc') }];
    const c = await custos(hosts, true);
    try {
      const r = await nativeSessions(binary, { dir, url: c.url, token: 'bench-token', hosts, pcrs: PCRS, audience: 'ledger', ratePerSec: 50, durationMs: 400 });
      expect(c.failures).toEqual([]);
      expect(r.ok).toBe(0);
      expect(r.errors).toBe(20);
    } finally {
      c.server.close();
    }
  });
});
