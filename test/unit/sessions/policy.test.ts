import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadPolicyFile, type LoadedPolicy } from '../../../src/policy/loader.js';
import { PolicyError } from '../../../src/policy/policy-error.js';
import { lintPolicies, loadRegisteredPolicies, policyKindEntry } from '../../../src/policy/registry.js';
import {
  SESSION_POLICY_SCHEMA,
  checkSessionPolicy,
  checkSessionPolicySet,
  registerSessionPolicyKind,
  resolveSessionPolicy,
  type SessionPolicy,
} from '../../../src/sessions/policy.js';

const root = new URL('../../../', import.meta.url);
const tmp = mkdtempSync(join(tmpdir(), 'custos-session-policy-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function load(yaml: string): LoadedPolicy<SessionPolicy> {
  const file = join(tmp, `p${n++}.yaml`);
  writeFileSync(file, yaml);
  return loadPolicyFile<SessionPolicy>(file, 'session', SESSION_POLICY_SCHEMA, { semanticCheck: checkSessionPolicy });
}

function problemsOf(yaml: string): { line: number; reason: string; path: string }[] {
  try {
    load(yaml);
  } catch (e) {
    if (e instanceof PolicyError) return e.problems.map((p) => ({ line: p.line, reason: p.reason, path: p.path }));
    throw e;
  }
  throw new Error('expected the policy to be refused');
}

const BASE = `id: s1
version: 1
hosts:
  ids: [host-a]
attestationPolicy: prod-boot
audiences: [ledger]
issuerKey: session-issuer
`;

describe('session policy schema', () => {
  it('the JSON Schema file equals the schema in code', () => {
    const file = JSON.parse(readFileSync(new URL('policies/schema/session.schema.json', root), 'utf8')) as unknown;
    expect(file).toEqual(JSON.parse(JSON.stringify(SESSION_POLICY_SCHEMA)));
  });

  it('registers the session kind with the registry', () => {
    registerSessionPolicyKind();
    expect(policyKindEntry('session')?.schema).toBe(SESSION_POLICY_SCHEMA);
  });

  it('loads the example policy and lint passes for the policies folder', () => {
    const loaded = loadRegisteredPolicies<SessionPolicy>(new URL('policies', root).pathname, 'session');
    const enclaves = loaded.find((p) => p.id === 'enclaves');
    expect(enclaves?.doc.issuerKey).toBe('session-issuer');
    const lint = lintPolicies(new URL('policies', root).pathname);
    expect(lint.errors.filter((e) => e.file.includes('sessions'))).toEqual([]);
    expect(lint.loaded.some((l) => l.kind === 'session' && l.id === 'enclaves')).toBe(true);
  });

  it('accepts a minimal policy', () => {
    expect(load(BASE).doc.audiences).toEqual(['ledger']);
  });

  it('refuses a token TTL above the PT15M hard cap, pointing at the line', () => {
    const p = problemsOf(BASE + 'tokenTtl: PT16M\n');
    expect(p).toEqual([{ line: 8, path: '/tokenTtl', reason: expect.stringContaining('PT15M') }]);
    expect(problemsOf(BASE + 'tokenTtl: P1D\n')[0]?.reason).toMatch(/PT15M/);
    expect(problemsOf(BASE + 'tokenTtl: P1M\n')[0]?.reason).toMatch(/clock duration/);
    expect(problemsOf(BASE + 'tokenTtl: PT0S\n')[0]?.reason).toMatch(/longer than zero/);
    expect(problemsOf(BASE + 'tokenTtl: 5m\n')[0]?.reason).toMatch(/ISO 8601/);
    expect(load(BASE + 'tokenTtl: PT15M\n').doc.tokenTtl).toBe('PT15M');
  });

  it('refuses unknown fields, unknown disclosure names, empty audiences and empty host selectors', () => {
    expect(problemsOf(BASE + 'extra: 1\n')[0]?.reason).toMatch(/unknown field "extra"/);
    expect(problemsOf(BASE + 'disclose: [ear.secret]\n')[0]?.path).toBe('/disclose/0');
    expect(problemsOf(BASE.replace('audiences: [ledger]', 'audiences: []'))[0]?.path).toBe('/audiences');
    expect(problemsOf(BASE.replace('  ids: [host-a]', '  labels: {}'))[0]?.path).toMatch(/^\/hosts/);
    expect(problemsOf(BASE.replace('issuerKey: session-issuer\n', ''))[0]?.reason).toMatch(/issuerKey/);
  });

  it('the set check refuses two policies covering the same host id and audience', () => {
    const a = load(BASE);
    const b = load(BASE.replace('id: s1', 'id: s2'));
    const issues = checkSessionPolicySet([a, b]);
    expect(issues).toEqual([{ index: 1, path: ['hosts', 'ids'], reason: expect.stringContaining('"s1"') }]);
    expect(checkSessionPolicySet([a, load(BASE.replace('id: s1', 'id: s3').replace('[ledger]', '[other]'))])).toEqual([]);
  });
});

describe('resolveSessionPolicy', () => {
  const byId: SessionPolicy = {
    id: 'by-id', version: 1, hosts: { ids: ['host-a'] }, attestationPolicy: 'prod-boot',
    audiences: ['ledger'], issuerKey: 'session-issuer',
  };
  const byLabel: SessionPolicy = {
    id: 'by-label', version: '2026-01', hosts: { labels: { role: 'enclave-host', pool: 'production' } },
    attestationPolicy: 'prod-boot', audiences: ['settlement'], tokenTtl: 'PT10M',
    disclose: ['ear.trustworthiness-vector'], issuerKey: 'session-issuer',
  };

  it('resolves by host id with the default TTL of 5 minutes and no disclosure', () => {
    expect(resolveSessionPolicy([byId, byLabel], { id: 'host-a' }, 'ledger')).toEqual({
      id: 'by-id', version: 1, attestationPolicy: 'prod-boot', audience: 'ledger', tokenTtlSeconds: 300, disclose: [], issuerKey: 'session-issuer',
    });
  });

  it('resolves by labels only when every label matches', () => {
    const r = resolveSessionPolicy([byId, byLabel], { id: 'h9', labels: { role: 'enclave-host', pool: 'production', zone: 'a' } }, 'settlement');
    expect([r.id, r.tokenTtlSeconds, r.disclose]).toEqual(['by-label', 600, ['ear.trustworthiness-vector']]);
    expect(() => resolveSessionPolicy([byLabel], { id: 'h9', labels: { role: 'enclave-host' } }, 'settlement')).toThrow(
      expect.objectContaining({ code: 'ERR_POLICY_NOT_FOUND' }),
    );
  });

  it('accepts loaded policies as well as documents', () => {
    expect(resolveSessionPolicy([load(BASE)], { id: 'host-a' }, 'ledger').id).toBe('s1');
  });

  it('denies unknown hosts, unlisted audiences, and ambiguous coverage', () => {
    expect(() => resolveSessionPolicy([byId], { id: 'host-b' }, 'ledger')).toThrow(expect.objectContaining({ code: 'ERR_POLICY_NOT_FOUND' }));
    expect(() => resolveSessionPolicy([], { id: 'host-a' }, 'ledger')).toThrow(expect.objectContaining({ code: 'ERR_POLICY_NOT_FOUND' }));
    expect(() => resolveSessionPolicy([byId], { id: 'host-a' }, 'settlement')).toThrow(expect.objectContaining({ code: 'ERR_AUDIENCE_NOT_ALLOWED' }));
    const both = { ...byLabel, id: 'both', audiences: ['ledger'] };
    expect(() => resolveSessionPolicy([byId, both], { id: 'host-a', labels: { role: 'enclave-host', pool: 'production' } }, 'ledger')).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG' }),
    );
  });

  it('enforces the TTL cap on policies built in code', () => {
    expect(() => resolveSessionPolicy([{ ...byId, tokenTtl: 'PT20M' }], { id: 'host-a' }, 'ledger')).toThrow(
      expect.objectContaining({ code: 'ERR_POLICY_INVALID' }),
    );
  });
});
