import { existsSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { loadConfig } from '../config/config.js';

const REQUEST_TIMEOUT_MS = Number(process.env.CUSTOS_CLIENT_TIMEOUT_SECONDS ?? 60) * 1000;

/** Exit codes scripts can trust. */
export const EXIT = { ok: 0, refused: 1, usage: 2, unavailable: 3 } as const;

export class CliError extends Error {
  constructor(message: string, readonly exitCode: number, readonly code?: string) {
    super(message);
  }
}

export interface ClientOptions {
  url?: string;
  tokenFile?: string;
  caFile?: string;
  json?: boolean;
}

export interface ApiClient {
  url: string;
  /** The bearer token in use (for streaming downloads); never printed. */
  token: string | undefined;
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
}

/** Server URL and API token from flags, else CUSTOS_URL / CUSTOS_TOKEN_FILE, else the config. */
export function apiClient(opts: ClientOptions, needToken = true): ApiClient {
  let url = opts.url ?? process.env.CUSTOS_URL;
  let tokenFile = opts.tokenFile ?? process.env.CUSTOS_TOKEN_FILE;
  if (url === undefined || (needToken && tokenFile === undefined)) {
    let cfg;
    try {
      cfg = loadConfig();
    } catch (e) {
      throw new CliError((e as Error).message, EXIT.usage);
    }
    const host = cfg.listen.host.includes(':') ? `[${cfg.listen.host}]` : cfg.listen.host;
    url ??= `${cfg.tls ? 'https' : 'http'}://${host === '0.0.0.0' ? '127.0.0.1' : host}:${cfg.listen.port}`;
    tokenFile ??= join(cfg.stateDir, 'admin.token');
  }
  let token: string | undefined;
  if (needToken) {
    if (!tokenFile || !existsSync(tokenFile)) throw new CliError(`no API token: pass --token-file or set CUSTOS_TOKEN_FILE (looked for ${tokenFile})`, EXIT.usage);
    token = readFileSync(tokenFile, 'utf8').trim();
  }
  const caFile = opts.caFile ?? process.env.CUSTOS_CA_FILE;
  const ca = caFile ? readFileSync(caFile) : undefined;
  const base = url.replace(/\/+$/, '');
  return {
    url: base,
    token,
    call: <T>(method: string, path: string, body?: unknown) => send<T>(base, method, path, body, token, ca),
  };
}

function send<T>(base: string, method: string, path: string, body: unknown, token: string | undefined, ca: Buffer | undefined): Promise<T> {
  const u = new URL(base + path);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string> = { accept: 'application/json' };
  if (payload) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(payload.length);
  }
  if (token) headers.authorization = `Bearer ${token}`;
  const req = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<T>((resolve, reject) => {
    const r = req(u, { method, headers, ...(ca ? { ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = text ? JSON.parse(text) : {};
        } catch {
          /* plain text answer */
        }
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve(parsed as T);
        const err = (parsed as { error?: { code?: string; message?: string; requestId?: string } }).error;
        const msg = err ? `${err.code}: ${err.message} (request ${err.requestId})` : `HTTP ${status}`;
        reject(new CliError(msg, status >= 500 ? EXIT.unavailable : EXIT.refused, err?.code));
      });
    });
    // A server that accepts the connection and then hangs must not hang scripts.
    r.setTimeout(REQUEST_TIMEOUT_MS, () => r.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)));
    r.on('error', (e) => reject(new CliError(`cannot reach custos at ${base}: ${(e as Error).message}`, EXIT.unavailable)));
    if (payload) r.write(payload);
    r.end();
  });
}

/** Prints either JSON (for scripts) or a readable rendering. */
export function output(json: boolean | undefined, value: unknown, readable: () => string): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : readable() + '\n');
}
