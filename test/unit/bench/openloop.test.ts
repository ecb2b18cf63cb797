import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOpenLoop, nativeOpenLoop } from '../../../bench/openloop.js';

/** A server whose answer to the n-th request (from 1) `answer` decides. */
async function serve(answer: (n: number, req: IncomingMessage, body: string, res: ServerResponse) => void): Promise<{ server: Server; url: string }> {
  let n = 0;
  const server = createServer((req, res) => {
    const k = ++n;
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => answer(k, req, body, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
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
    const { server, url } = await serve((n, req, body, res) => {
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
