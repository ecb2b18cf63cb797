import { IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type AppDeps } from '../../../src/http/app.js';
import { Metrics } from '../../../src/http/metrics.js';
import { Routes } from '../../../src/http/router.js';
import { CustosError } from '../../../src/lib/errors.js';

// The app as custos builds it, with probe routes that report which path served them: on the
// fast path a handler gets the fast path's request object, through Express node's IncomingMessage
// (with Express's prototype).
const LIMIT = 2048;
let port: number;
let server: Server;
const metrics = new Metrics({ defaultMetrics: false });

beforeAll(async () => {
  const probe = (deps: AppDeps) => {
    const r = new Routes(deps);
    r.publicPost('/probe/:id', (req) => ({ fast: !(req instanceof IncomingMessage), id: req.params.id, body: req.body ?? null }), 201);
    r.publicGet('/probe/:id', (req) => ({ fast: !(req instanceof IncomingMessage), id: req.params.id, query: req.query }));
    r.publicPost('/probe/:id/refuse', () => {
      throw new CustosError('ERR_NOT_FOUND', 'no such probe');
    });
    r.publicPost('/probe/:id/crash', () => {
      throw new Error('secret detail that must not leak');
    });
    return r.router;
  };
  const deps = {
    log: pino({ level: 'silent' }), metrics, bodyLimitBytes: LIMIT, clientRoles: [], extraRoutes: [probe],
  } as unknown as AppDeps;
  server = createApp(deps).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

/** Writes raw bytes on one connection and reads `count` answers (Content-Length framed). */
function raw(request: Buffer | string, count = 1, head = false): Promise<Answer[]> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const out: Answer[] = [];
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        const headers: Record<string, string> = {};
        for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
        const len = head ? 0 : Number(headers['content-length'] ?? 0);
        if (buf.length < end + 4 + len) return;
        const text = buf.subarray(end + 4, end + 4 + len).toString('utf8');
        out.push({ status: Number(lines[0]!.split(' ')[1]), headers, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) });
        buf = buf.subarray(end + 4 + len);
        if (out.length === count) {
          s.end();
          resolve(out);
          return;
        }
      }
    });
    s.on('error', reject);
    s.write(request);
  });
}

function post(path: string, body: Buffer | string, headers: Record<string, string> = {}): string | Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const h = { 'content-type': 'application/json', 'content-length': String(b.length), ...headers };
  const head = `POST ${path} HTTP/1.1\r\nHost: x\r\n${Object.entries(h).filter(([, v]) => v !== '').map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), b]);
}

const one = async (request: Buffer | string): Promise<Answer> => (await raw(request))[0]!;

describe('fast path: canonical API requests on node:http objects', () => {
  it('serves a canonical JSON request itself: decoded parameters, body, status, common headers', async () => {
    const a = await one(post('/probe/a%20b', '{"x":1}', { 'x-request-id': 'req-1' }));
    expect(a.status).toBe(201);
    expect(a.body).toEqual({ fast: true, id: 'a b', body: { x: 1 } });
    expect(a.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(a.headers['x-request-id']).toBe('req-1');
    expect(a.headers['cache-control']).toBe('no-store');
  });

  it('takes the media type in any case, with or without charset=utf-8', async () => {
    for (const type of ['Application/JSON', 'application/json; charset=utf-8', 'application/json;charset="UTF-8"']) {
      expect((await one(post('/probe/t', '{}', { 'content-type': type }))).body).toMatchObject({ fast: true, body: {} });
    }
  });

  it('serves GET with a query string and a POST without a body', async () => {
    expect((await one('GET /probe/q?a=1&a=2&b=x HTTP/1.1\r\nHost: x\r\n\r\n')).body).toEqual({ fast: true, id: 'q', query: { a: ['1', '2'], b: 'x' } });
    expect((await one(post('/probe/e', '', { 'content-type': '' })))).toMatchObject({ status: 201, body: { fast: true, body: null } });
  });

  it('refuses malformed or non-object JSON with ERR_BAD_JSON and the envelope, and keeps the connection', async () => {
    const [bad, str, num, ok] = await raw(Buffer.concat([
      Buffer.from(post('/probe/j', '{"x":')), Buffer.from(post('/probe/j', '"just a string"')), Buffer.from(post('/probe/j', '  42')), Buffer.from(post('/probe/j', ' [1,2]')),
    ]), 4);
    for (const a of [bad!, str!, num!]) {
      expect(a.status).toBe(400);
      expect((a.body.error as { code: string }).code).toBe('ERR_BAD_JSON');
      expect(typeof (a.body.error as { requestId: string }).requestId).toBe('string');
      expect(a.headers['cache-control']).toBe('no-store');
    }
    expect(ok).toMatchObject({ status: 201, body: { fast: true, body: [1, 2] } });
  });

  it('answers a handler refusal with its code and an unexpected failure as ERR_INTERNAL, without the detail', async () => {
    const refused = await one(post('/probe/r/refuse', '{}'));
    expect(refused.status).toBe(404);
    expect(refused.body.error).toMatchObject({ code: 'ERR_NOT_FOUND', message: 'no such probe' });
    const crashed = await one(post('/probe/r/crash', '{}'));
    expect(crashed.status).toBe(500);
    expect((crashed.body.error as { code: string }).code).toBe('ERR_INTERNAL');
    expect(JSON.stringify(crashed.body)).not.toContain('secret detail');
  });

  it('counts its requests in the HTTP metrics under the route', async () => {
    await one(post('/probe/m', '{}'));
    const text = await metrics.registry.getSingleMetricAsString('custos_http_requests_total');
    expect(text).toMatch(/custos_http_requests_total\{method="POST",route="POST \/probe\/:id",status="201"\} [1-9]/);
    // A body that is not JSON is counted under the route it was sent to.
    expect(text).toMatch(/route="POST \/probe\/:id",status="400"\} [1-9]/);
  });
});

describe('fast path: everything else goes to Express, to the same handlers', () => {
  it('a chunked body', async () => {
    const body = '{"chunked":true}';
    const req = `POST /probe/c HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    expect(await one(req)).toMatchObject({ status: 201, body: { fast: false, id: 'c', body: { chunked: true } } });
  });

  it('a gzip body (inflated by Express)', async () => {
    const a = await one(post('/probe/z', gzipSync('{"z":1}'), { 'content-encoding': 'gzip' }));
    expect(a).toMatchObject({ status: 201, body: { fast: false, body: { z: 1 } } });
  });

  it('a body over the limit: 400 ERR_BODY_TOO_LARGE (API.md)', async () => {
    const a = await one(post('/probe/big', `{"p":"${'x'.repeat(LIMIT)}"}`));
    expect(a.status).toBe(400);
    expect((a.body.error as { code: string }).code).toBe('ERR_BODY_TOO_LARGE');
  });

  it('another media type or charset: 415 ERR_UNSUPPORTED_MEDIA_TYPE', async () => {
    for (const type of ['text/plain', 'application/json; charset=latin1']) {
      const a = await one(post('/probe/t', '{}', { 'content-type': type }));
      expect(a.status).toBe(415);
      expect((a.body.error as { code: string }).code).toBe('ERR_UNSUPPORTED_MEDIA_TYPE');
    }
  });

  it('other forms of the path, and HEAD', async () => {
    expect((await one(post('/probe/s/', '{}'))).body).toMatchObject({ fast: false, id: 's' });
    const [head] = await raw('HEAD /probe/h HTTP/1.1\r\nHost: x\r\n\r\n', 1, true);
    expect(head!.status).toBe(200);
    expect(head!.headers['cache-control']).toBe('no-store');
  });

  it('unknown paths and methods keep their 404 and 405', async () => {
    expect((await one(post('/nothing/here', '{}'))).status).toBe(404);
    const m = await one('DELETE /probe/x HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(m.status).toBe(405);
    expect(m.headers['allow']).toBe('GET, HEAD, POST');
  });
});
