import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, isLoopback, loadConfig } from '../../../src/config/config.js';
import { openStore } from '../../../src/store/open-store.js';
import { CustosError } from '../../../src/lib/errors.js';

const cwd = mkdtempSync(join(tmpdir(), 'custos-cfg-'));

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.field;
    throw e;
  }
  throw new Error('no error');
}

describe('configuration', () => {
  it('has working defaults relative to the working directory', () => {
    const c = loadConfig({}, cwd);
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 7800 });
    expect(c.stateDir).toBe(join(cwd, '.custos'));
    expect(c.database).toEqual({ kind: 'sqlite', path: join(cwd, '.custos', 'custos.db') });
    expect(c.policyDir).toBe(join(cwd, 'policies'));
    expect(c.ekCaDir).toBe(join(cwd, 'attestation', 'ek-ca'));
    expect(c.pkcs11.pinFile).toBe(join(cwd, '.custos', 'hsm', 'pin'));
    expect(c.tls).toBeNull();
    expect(c.heapGrowingPercent).toBe(300);
  });

  it('takes environment overrides over the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'custos-cfg-'));
    writeFileSync(join(dir, 'config.yaml'), 'listen: 127.0.0.1:9000\npkcs11:\n  tokenLabel: fromfile\n');
    const c = loadConfig({ CUSTOS_STATE_DIR: dir, CUSTOS_LISTEN: '127.0.0.2:9100', CUSTOS_PKCS11_MODULE: '/opt/hsm/lib.so', CUSTOS_POLICY_DIR: '/etc/custos/policies' }, cwd);
    expect(c.listen).toEqual({ host: '127.0.0.2', port: 9100 });
    expect(c.pkcs11.tokenLabel).toBe('fromfile');
    expect(c.pkcs11.module).toBe('/opt/hsm/lib.so');
    expect(c.policyDir).toBe('/etc/custos/policies');
    expect(loadConfig({ CUSTOS_HEAP_GROWING_PERCENT: '0' }, cwd).heapGrowingPercent).toBe(0);
    expect(c.processes).toBe(1);
    expect(loadConfig({ CUSTOS_PROCESSES: '4' }, cwd).processes).toBe(4);
    expect(c.pkcs11.sessionCopies).toBe('auto');
    expect(loadConfig({ CUSTOS_PKCS11_SESSION_COPIES: 'off' }, cwd).pkcs11.sessionCopies).toBe('off');
  });

  it('names the field of an invalid value', () => {
    expect(fieldOf(() => loadConfig({ CUSTOS_LISTEN: 'nonsense' }, cwd))).toBe('listen');
    expect(fieldOf(() => loadConfig({ CUSTOS_DATABASE_URL: 'mysql://x' }, cwd))).toBe('databaseUrl');
    expect(fieldOf(() => loadConfig({ CUSTOS_PKCS11_WORKERS: 'many' }, cwd))).toBe('pkcs11.workers');
    expect(fieldOf(() => loadConfig({ CUSTOS_PKCS11_SESSION_COPIES: 'yes' }, cwd))).toBe('pkcs11.sessionCopies');
    for (const n of ['0', '65', 'two']) expect(fieldOf(() => loadConfig({ CUSTOS_PROCESSES: n }, cwd))).toBe('processes');
    expect(fieldOf(() => loadConfig({ CUSTOS_HEAP_GROWING_PERCENT: '5000' }, cwd))).toBe('heapGrowingPercent');
    expect(fieldOf(() => loadConfig({ CUSTOS_HEAP_GROWING_PERCENT: '-1' }, cwd))).toBe('heapGrowingPercent');
    expect(fieldOf(() => loadConfig({ CUSTOS_TLS_CERT: '/x.pem' }, cwd))).toBe('tls.key');
    expect(fieldOf(() => loadConfig({ CUSTOS_CONFIG: join(cwd, 'missing.yaml') }, cwd))).toBe('CUSTOS_CONFIG');
    const dir = mkdtempSync(join(tmpdir(), 'custos-cfg-'));
    writeFileSync(join(dir, 'config.yaml'), 'listen: 127.0.0.1:9000\nunknownThing: 1\n');
    expect(fieldOf(() => loadConfig({ CUSTOS_STATE_DIR: dir }, cwd))).toBe('unknownThing');
  });

  it('accepts a postgres URL in the config layer and refuses it clearly at open', () => {
    const c = loadConfig({ CUSTOS_DATABASE_URL: 'postgres://custos@db/custos' }, cwd);
    expect(c.database).toEqual({ kind: 'postgres', url: 'postgres://custos@db/custos' });
    try {
      openStore(c.database);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(CustosError);
      expect((e as CustosError).code).toBe('ERR_NOT_SUPPORTED');
      expect((e as CustosError).message).toMatch(/not yet supported/);
    }
  });

  it('knows loopback addresses', () => {
    expect(isLoopback('127.0.0.1')).toBe(true);
    expect(isLoopback('127.1.2.3')).toBe(true);
    expect(isLoopback('::1')).toBe(true);
    expect(isLoopback('localhost')).toBe(true);
    expect(isLoopback('0.0.0.0')).toBe(false);
    expect(isLoopback('10.0.0.1')).toBe(false);
  });
});
