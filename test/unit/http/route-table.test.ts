import express from 'express';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppDeps } from '../../../src/http/app.js';
import { RouteTable, Routes, routeEntries } from '../../../src/http/router.js';

// Two routers as the app mounts them; a marker between the table and the routers tells which of
// the two dispatched a request (the table answers before the marker runs).
let base: string;
let close: () => Promise<void>;

beforeAll(async () => {
  const a = new Routes({} as AppDeps);
  a.publicGet('/t/:id', (req, res) => ({ route: 'a', id: req.params.id, walked: res.locals.walked === true }));
  a.publicPost('/t/:id/do', (req, res) => ({ route: 'a-post', id: req.params.id, walked: res.locals.walked === true }), 201);
  const b = new Routes({} as AppDeps);
  b.publicGet('/t/:id/sub/:n', (req, res) => ({ route: 'b', id: req.params.id, n: req.params.n, walked: res.locals.walked === true }));
  b.publicGet('/fail', () => {
    throw new Error('boom');
  });
  const app = express();
  app.use(express.json());
  app.use(new RouteTable([...routeEntries(a.router), ...routeEntries(b.router)]).middleware());
  app.use((_req, res, next) => {
    res.locals.walked = true;
    next();
  });
  app.use(a.router);
  app.use(b.router);
  app.use((_req: express.Request, res: express.Response) => void res.status(404).json({ notFound: true }));
  app.use((err: Error & { status?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => void res.status(err.status ?? 500).json({ error: err.message }));
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  close = () => new Promise((r) => server.close(() => r()));
});
afterAll(() => close?.());

const get = async (path: string) => {
  const r = await fetch(base + path);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
};

describe('route table ahead of the Express routers', () => {
  it('dispatches canonical paths itself, with decoded parameters and the route status', async () => {
    expect(await get('/t/abc')).toEqual({ status: 200, body: { route: 'a', id: 'abc', walked: false } });
    expect(await get('/t/a%20b/sub/7')).toEqual({ status: 200, body: { route: 'b', id: 'a b', n: '7', walked: false } });
    const p = await fetch(`${base}/t/x/do`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(p.status).toBe(201);
    expect(await p.json()).toEqual({ route: 'a-post', id: 'x', walked: false });
  });

  it('leaves other forms to Express, which serves the same routes', async () => {
    expect(await get('/t/abc/')).toEqual({ status: 200, body: { route: 'a', id: 'abc', walked: true } });
    expect(await get('/T/abc')).toEqual({ status: 200, body: { route: 'a', id: 'abc', walked: true } });
    expect((await get('/t/%E0%A4%A/sub/1')).status).toBe(400);
    expect(await get('/t')).toEqual({ status: 404, body: { notFound: true } });
    // Wrong method: not in the table's list for it, Express has no such route either.
    expect((await fetch(`${base}/t/abc/do`)).status).toBe(404);
  });

  it('hands a handler failure to the error handler', async () => {
    expect(await get('/fail')).toEqual({ status: 500, body: { error: 'boom' } });
  });
});
