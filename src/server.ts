import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import { ConfigError, isLoopback, type Config } from './config/config.js';
import type { Logger } from './lib/logger.js';

/**
 * Starts the HTTP(S) listener. With tls.cert/tls.key the server speaks HTTPS only; with
 * tls.clientCa it also asks for client certificates (verified against that CA; mapping to a role
 * happens per request). Plain HTTP is refused on a non-loopback address unless forced.
 */
export async function listen(app: Express, config: Pick<Config, 'listen' | 'tls' | 'allowInsecureHttp'>, log: Logger): Promise<{ server: Server; url: string }> {
  let server: Server;
  let scheme: 'http' | 'https';
  if (config.tls) {
    server = createHttpsServer(
      {
        cert: readFileSync(config.tls.cert),
        key: readFileSync(config.tls.key),
        minVersion: 'TLSv1.2',
        ...(config.tls.clientCa ? { ca: readFileSync(config.tls.clientCa), requestCert: true, rejectUnauthorized: false } : {}),
      },
      app,
    );
    scheme = 'https';
  } else {
    if (!isLoopback(config.listen.host) && !config.allowInsecureHttp) {
      throw new ConfigError('listen', `plain HTTP on ${config.listen.host} is refused: configure tls.cert/tls.key, listen on loopback, or set CUSTOS_ALLOW_INSECURE_HTTP=true`);
    }
    server = createHttpServer(app);
    scheme = 'http';
  }
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `${scheme}://${host}:${addr.port}`;
  if (scheme === 'http') {
    log.warn({ url }, isLoopback(config.listen.host) ? 'serving plain HTTP on a loopback address' : 'serving plain HTTP on a non-loopback address because it was forced');
  }
  log.info({ url, mtls: Boolean(config.tls?.clientCa) }, 'custos listening');
  return { server, url };
}
