import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** The CLI client (also the agent's) gives up on a server that accepts and never answers. */
let server: Server;
const sockets = new Set<Socket>();
let port = 0;
beforeAll(async () => {
  server = createServer((s) => {
    sockets.add(s); // accepts, reads nothing, answers nothing
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

describe('CLI client', () => {
  it('gives up with exit class "unavailable" instead of hanging', async () => {
    process.env.CUSTOS_CLIENT_TIMEOUT_SECONDS = '1';
    const { apiClient, CliError, EXIT } = await import('../../src/cli/client.js');
    const err = await apiClient({ url: `http://127.0.0.1:${port}` }, false).call('GET', '/healthz').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as InstanceType<typeof CliError>).exitCode).toBe(EXIT.unavailable);
    expect((err as Error).message).toMatch(/no answer within 1 s/);
  }, 20_000);
});
