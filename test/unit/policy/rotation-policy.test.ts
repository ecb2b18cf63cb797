import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isCustosError } from '../../../src/lib/errors.js';
import { PolicyError } from '../../../src/policy/policy-error.js';
import { registerAllPolicyKinds } from '../../../src/policy/policy-service.js';
import { lintPolicies, loadRegisteredPolicies } from '../../../src/policy/registry.js';
import {
  ROTATION_POLICY_SCHEMA,
  globsIntersect,
  resolvePolicyForKey,
  selectorsMayOverlap,
  type RotationPolicy,
} from '../../../src/policy/rotation-policy.js';
import type { KeyWithVersions } from '../../../src/rotation/types.js';

const REPO = join(import.meta.dirname, '..', '..', '..');

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'custos-rot-'));
  mkdirSync(join(root, 'rotation'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const BASE = `id: p
version: 1
selector:
  names: [k1]
rotateEvery: P90D
deactivateAfter: P30D
destroyAfter: P44D
destroyPendingWindow: P14D
`;

function put(name: string, text: string): string {
  const p = join(root, 'rotation', name);
  writeFileSync(p, text);
  return p;
}

function problemsOf(text: string): PolicyError['problems'] {
  put('p.yaml', text);
  try {
    loadRegisteredPolicies(root, 'rotation');
  } catch (e) {
    if (e instanceof PolicyError) return e.problems;
    throw e;
  }
  return [];
}

describe('rotation policy schema and checks', () => {
  it('the committed JSON Schema equals the one the code validates with', () => {
    const file = JSON.parse(readFileSync(join(REPO, 'policies', 'schema', 'rotation.schema.json'), 'utf8'));
    expect(file).toEqual(JSON.parse(JSON.stringify(ROTATION_POLICY_SCHEMA)));
  });

  it('the example policies in the repository lint clean', () => {
    registerAllPolicyKinds();
    const r = lintPolicies(join(REPO, 'policies'));
    expect(r.errors).toEqual([]);
    expect(r.loaded.filter((l) => l.kind === 'rotation').map((l) => l.id).sort()).toEqual(['audit-key', 'data-keys', 'issuer-keys', 'manual-keys']);
  });

  it('accepts a minimal automatic and a manual policy', () => {
    expect(problemsOf(BASE)).toEqual([]);
    expect(problemsOf('id: m\nversion: 1\nmanual: true\nselector:\n  labels: {rotation: manual}\n')).toEqual([]);
  });

  it('rejects a bad duration with its line', () => {
    const ps = problemsOf(BASE.replace('rotateEvery: P90D', 'rotateEvery: 90d'));
    expect(ps[0]).toMatchObject({ line: 5, column: 14, path: '/rotateEvery' });
    expect(ps[0]!.reason).toContain('ISO 8601 duration');
  });

  it('rejects an unknown field, also on a manual policy', () => {
    expect(problemsOf(BASE + 'rotateEvry: P1D\n')[0]).toMatchObject({ line: 9, path: '/rotateEvry' });
    expect(problemsOf('id: m\nversion: 1\nmanual: true\nselector: {names: [a]}\nrotateEvery: P1D\n')[0]).toMatchObject({ line: 5, path: '/rotateEvery' });
  });

  it('rejects a missing lifecycle field and an empty selector', () => {
    expect(problemsOf(BASE.replace('destroyPendingWindow: P14D\n', '')).map((p) => p.reason).join()).toContain('destroyPendingWindow');
    expect(problemsOf(BASE.replace('selector:\n  names: [k1]\n', 'selector: {}\n'))[0]).toMatchObject({ path: '/selector', line: 3 });
  });

  it('rejects destroyAfter shorter than deactivateAfter, at the destroyAfter line', () => {
    const ps = problemsOf(BASE.replace('destroyAfter: P44D', 'destroyAfter: P20D'));
    expect(ps[0]).toMatchObject({ line: 7, path: '/destroyAfter' });
    expect(ps[0]!.reason).toContain('deactivateAfter');
  });

  it('rejects a destroyAfter that leaves less than the pending window', () => {
    expect(problemsOf(BASE.replace('destroyAfter: P44D', 'destroyAfter: P40D'))[0]).toMatchObject({ path: '/destroyAfter' });
  });

  it('rejects prePublish, jitter or notifyBefore not shorter than rotateEvery', () => {
    expect(problemsOf(BASE + 'prePublish: P90D\n')[0]).toMatchObject({ path: '/prePublish', line: 9 });
    expect(problemsOf(BASE.replace('P90D', 'P1M') + 'prePublish: P28D\n')[0]).toMatchObject({ path: '/prePublish' });
    expect(problemsOf(BASE + 'jitter: P91D\n')[0]).toMatchObject({ path: '/jitter' });
    expect(problemsOf(BASE + 'notifyBefore: P3M\n')[0]).toMatchObject({ path: '/notifyBefore' });
  });

  it('bounds the pending window by profile', () => {
    const short = BASE.replace('destroyPendingWindow: P14D', 'destroyPendingWindow: P1D');
    expect(problemsOf(short)[0]).toMatchObject({ path: '/destroyPendingWindow', line: 8 });
    expect(problemsOf(short + 'profile: test\n')).toEqual([]);
    expect(problemsOf(BASE.replace('destroyAfter: P44D', 'destroyAfter: P90D').replace('P14D', 'P31D'))[0]).toMatchObject({ path: '/destroyPendingWindow' });
    expect(problemsOf(BASE.replace('destroyAfter: P44D', 'destroyAfter: P90D').replace('P14D', 'P31D') + 'profile: test\n')[0]).toMatchObject({ path: '/destroyPendingWindow' });
  });

  it('rejects an empty window, a bad time of day and maxVersions below 2', () => {
    expect(problemsOf(BASE + 'window: {start: "02:00", end: "02:00"}\n')[0]).toMatchObject({ path: '/window/end' });
    expect(problemsOf(BASE + 'window: {start: "2:00", end: "04:00"}\n')[0]).toMatchObject({ path: '/window/start' });
    expect(problemsOf(BASE + 'window: {start: "02:00", end: "04:00", days: [funday]}\n')[0]).toMatchObject({ path: '/window/days/0' });
    expect(problemsOf(BASE + 'maxVersions: 1\n')[0]).toMatchObject({ path: '/maxVersions' });
  });

  it('rejects a selector that can select nothing', () => {
    expect(problemsOf(BASE.replace('names: [k1]', 'types: [aes-256]\n  purposes: [sign]'))[0]).toMatchObject({ path: '/selector' });
  });

  it('rejects overlapping selectors across files, naming the later file', () => {
    put('a.yaml', BASE.replace('id: p', 'id: a').replace('names: [k1]', 'names: ["issuer-*"]'));
    const b = put('b.yaml', BASE.replace('id: p', 'id: b').replace('names: [k1]', 'names: ["*-signing"]'));
    try {
      loadRegisteredPolicies(root, 'rotation');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(PolicyError);
      expect((e as PolicyError).details).toMatchObject({ file: b, path: '/selector', line: 4 });
    }
  });

  it('accepts selectors made disjoint by purpose, type, label value or name', () => {
    put('a.yaml', BASE.replace('id: p', 'id: a').replace('names: [k1]', 'purposes: [sign]\n  names: ["issuer-*"]'));
    put('b.yaml', BASE.replace('id: p', 'id: b').replace('names: [k1]', 'types: [aes-256]'));
    put('c.yaml', 'id: c\nversion: 1\nmanual: true\nselector: {types: [rsa-2048], labels: {tier: gold}, names: ["legacy-*"]}\n');
    expect(() => loadRegisteredPolicies(root, 'rotation')).not.toThrow();
  });
});

describe('overlap primitives', () => {
  it('globsIntersect', () => {
    expect(globsIntersect('issuer-*', '*-signing')).toBe(true);
    expect(globsIntersect('issuer-*', 'data-*')).toBe(false);
    expect(globsIntersect('a?c', 'abc')).toBe(true);
    expect(globsIntersect('a?c', 'abbc')).toBe(false);
    expect(globsIntersect('*', 'x')).toBe(true);
    expect(globsIntersect('k1', 'k1')).toBe(true);
    expect(globsIntersect('k1', 'k2')).toBe(false);
    expect(globsIntersect('a*b*c', '*x*')).toBe(true);
  });

  it('selectorsMayOverlap', () => {
    expect(selectorsMayOverlap({ labels: { a: '1' } }, { labels: { a: '2' } })).toBe(false);
    expect(selectorsMayOverlap({ labels: { a: '1' } }, { labels: { b: '2' } })).toBe(true);
    expect(selectorsMayOverlap({ types: ['aes-256'] }, { purposes: ['sign'] })).toBe(false);
    expect(selectorsMayOverlap({ types: ['ec-p256'] }, { purposes: ['sign'] })).toBe(true);
    expect(selectorsMayOverlap({ names: ['x'] }, { types: ['ec-p256'] })).toBe(true);
  });
});

describe('resolvePolicyForKey', () => {
  const auto = (id: string, selector: RotationPolicy['selector']): RotationPolicy => ({
    id, version: 1, selector, rotateEvery: 'P90D', deactivateAfter: 'P30D', destroyAfter: 'P44D', destroyPendingWindow: 'P14D',
  });
  const key = (over: Partial<KeyWithVersions> = {}): KeyWithVersions => ({
    name: 'issuer-1', type: 'ec-p256', purpose: 'sign', createdAt: new Date(0), versions: [], ...over,
  });
  const codeOf = (f: () => unknown): string | undefined => {
    try {
      f();
    } catch (e) {
      return isCustosError(e) ? e.code : 'not custos';
    }
    return undefined;
  };

  it('picks the single matching policy, by glob, type, purpose and labels', () => {
    const ps = [auto('i', { names: ['issuer-*'], labels: { env: 'prod' } }), auto('d', { types: ['aes-256'] })];
    expect(resolvePolicyForKey(ps, key({ labels: { env: 'prod', x: 'y' } }))).toBe(ps[0]);
    expect(resolvePolicyForKey(ps, key({ name: 'blob', type: 'aes-256', purpose: 'encrypt' }))).toBe(ps[1]);
  });

  it('returns manual for manual policies and for keys that say so', () => {
    const ps: RotationPolicy[] = [{ id: 'm', version: 1, manual: true, selector: { names: ['issuer-1'] } }];
    expect(resolvePolicyForKey(ps, key())).toBe('manual');
    expect(resolvePolicyForKey([], key({ rotationPolicy: 'manual' }))).toBe('manual');
  });

  it('prefers the key\'s named policy and fails closed on an unknown name', () => {
    const ps = [auto('i', { names: ['issuer-*'] }), auto('other', { names: ['zzz'] })];
    expect(resolvePolicyForKey(ps, key({ rotationPolicy: 'other' }))).toBe(ps[1]);
    expect(codeOf(() => resolvePolicyForKey(ps, key({ rotationPolicy: 'gone' })))).toBe('ERR_POLICY_NOT_FOUND');
  });

  it('throws on overlap and on no match', () => {
    const ps = [auto('a', { names: ['issuer-*'] }), auto('b', { purposes: ['sign'] })];
    expect(codeOf(() => resolvePolicyForKey(ps, key()))).toBe('ERR_POLICY_INVALID');
    expect(codeOf(() => resolvePolicyForKey([ps[0]!], key({ name: 'nope' })))).toBe('ERR_POLICY_NOT_FOUND');
    expect(codeOf(() => resolvePolicyForKey([ps[0]!], key({ labels: {} })))).toBeUndefined();
  });
});
