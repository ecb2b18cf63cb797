/**
 * The HTTP floor of this machine: what a Node server costs per request before it does any work,
 * measured with the same load generator and concurrency as the custos rows.
 *
 * Three servers in a child process, each answering POST /v1/keys/x/sign with a fixed JSON body
 * after reading and parsing the request's JSON:
 *   node:http     — the handler alone;
 *   + prototypes  — the same, after giving req/res Express's prototypes (`Object.setPrototypeOf`,
 *                   which Express does for every request);
 *   express       — Express 5 with a header middleware, express.json and one route.
 * The first is the ceiling of any HTTP/1.1 server in Node on this machine; the gap to the other
 * two is why custos's API routes run on node:http's objects (src/http/fast-path.ts).
 */
import { fork } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { closedLoop, JsonClient } from './load.js';

type Mode = 'node' | 'prototypes' | 'express';
const MODES: readonly Mode[] = ['node', 'prototypes', 'express'];
const LABEL: Record<Mode, string> = { node: 'node:http', prototypes: 'node:http + Express prototypes', express: 'Express 5 + express.json' };
const ANSWER = JSON.stringify({ signature: 'MEUCIQ'.padEnd(96, 'A'), kid: 'bench-ec/v1', version: 1 });

function answer(res: ServerResponse): void {
  res.statusCode = 200;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(ANSWER));
  res.end(ANSWER);
}

function readJson(req: IncomingMessage, then: () => void): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    JSON.parse(Buffer.concat(chunks).toString('utf8'));
    then();
  });
}

function serve(mode: Mode): void {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((_req, res, next) => {
    res.setHeader('x-request-id', 'bench');
    next();
  });
  app.use(express.json({ limit: 65_536, strict: true, type: 'application/json' }));
  app.post('/v1/keys/:name/sign', (_req, res) => answer(res));
  const handler =
    mode === 'express'
      ? app
      : (req: IncomingMessage, res: ServerResponse): void => {
          if (mode === 'prototypes') {
            Object.setPrototypeOf(req, app.request);
            Object.setPrototypeOf(res, app.response);
          }
          res.setHeader('x-request-id', 'bench');
          readJson(req, () => answer(res));
        };
  const server = createServer(handler);
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port }));
  process.on('message', (m) => {
    if (m === 'usage') {
      const u = process.cpuUsage();
      process.send!({ cpuUs: u.user + u.system });
    }
  });
}

export interface FloorRow {
  mode: Mode;
  label: string;
  opsPerSec: number;
  serverCpuUsPerOp: number;
  generatorCpuUsPerOp: number;
}

/** Each floor server in turn, closed loop at `concurrency` for `runMs` after a short warm-up. */
export async function httpFloorBench(concurrency: number, runMs: number): Promise<FloorRow[]> {
  const rows: FloorRow[] = [];
  for (const mode of MODES) {
    const child = fork(fileURLToPath(import.meta.url), ['--floor-server', mode], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    try {
      const { port } = await new Promise<{ port: number }>((resolve, reject) => {
        child.once('message', (m) => resolve(m as { port: number }));
        child.once('exit', (code) => reject(new Error(`floor server exited with ${code}`)));
      });
      const usage = (): Promise<number> =>
        new Promise((resolve) => {
          child.once('message', (m) => resolve((m as { cpuUs: number }).cpuUs));
          child.send('usage');
        });
      const client = new JsonClient(`http://127.0.0.1:${port}`, concurrency);
      const op = async (): Promise<void> => {
        const r = await client.post('/v1/keys/x/sign', { digest: 'q'.repeat(43) + '=' }, 'bench-token');
        if (r.status !== 200) throw new Error(`floor ${mode}: ${r.status}`);
      };
      await closedLoop(op, concurrency, Math.max(200, runMs / 4));
      const s0 = await usage();
      const g0 = process.cpuUsage();
      const r = await closedLoop(op, concurrency, runMs);
      const g = process.cpuUsage(g0);
      const s = (await usage()) - s0;
      const ops = Math.max(1, r.ok + r.errors);
      rows.push({ mode, label: LABEL[mode], opsPerSec: r.opsPerSec, serverCpuUsPerOp: Math.round(s / ops), generatorCpuUsPerOp: Math.round((g.user + g.system) / ops) });
      client.close();
    } finally {
      child.kill();
    }
  }
  return rows;
}

if (process.argv[2] === '--floor-server') serve(process.argv[3] as Mode);
