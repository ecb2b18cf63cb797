import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadPolicyDir, loadPolicyFile } from '../../../src/policy/loader.js';
import { PolicyError } from '../../../src/policy/policy-error.js';
import { lintPolicies, registerPolicyKind } from '../../../src/policy/registry.js';

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'version', 'every'],
  properties: {
    id: { type: 'string', minLength: 1 },
    version: { type: ['string', 'integer'] },
    every: { type: 'string', format: 'iso8601-duration' },
    at: { type: 'string', format: 'utc-time-of-day' },
    tags: { type: 'array', items: { type: 'string', enum: ['a', 'b'] } },
    nested: { type: 'object', additionalProperties: false, properties: { n: { type: 'integer', minimum: 1 } } },
  },
} as const;

interface Doc {
  id: string;
  version: string | number;
  every: string;
  at?: string;
  tags?: string[];
  nested?: { n?: number };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'custos-policy-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

function catchPolicy(fn: () => unknown): PolicyError {
  try {
    fn();
  } catch (e) {
    if (e instanceof PolicyError) return e;
    throw e;
  }
  throw new Error('expected a PolicyError');
}

describe('loadPolicyFile', () => {
  it('loads a valid YAML file with id, version and the sha256 of its bytes', () => {
    const text = '# comment\nid: p1\nversion: 3\nevery: P90D\nat: "02:00"\n';
    const p = write('p1.yaml', text);
    const l = loadPolicyFile<Doc>(p, 'rotation', schema);
    expect(l).toMatchObject({ id: 'p1', version: 3, kind: 'rotation', file: p });
    expect(l.doc.every).toBe('P90D');
    expect(l.doc.at).toBe('02:00');
    expect(l.sha256).toBe(createHash('sha256').update(text).digest('hex'));
  });

  it('loads JSON files through the same parser', () => {
    const p = write('p.json', '{"id": "j", "version": "2026-01", "every": "PT12H"}');
    expect(loadPolicyFile<Doc>(p, 'rotation', schema).doc).toEqual({ id: 'j', version: '2026-01', every: 'PT12H' });
  });

  it('names file, line and column of a bad duration', () => {
    const p = write('bad.yaml', 'id: p1\nversion: 1\n\nevery: 90 days\n');
    const e = catchPolicy(() => loadPolicyFile<Doc>(p, 'rotation', schema));
    expect(e.code).toBe('ERR_POLICY_INVALID');
    expect(e.details).toMatchObject({ file: p, line: 4, column: 8, path: '/every' });
    expect(e.message.startsWith(`${p}:4:8: every: must match ISO 8601 duration`)).toBe(true);
  });

  it('points at the key of an unknown field, even nested', () => {
    const p = write('u.yaml', 'id: p1\nversion: 1\nevery: P1D\nnested:\n  n: 2\n  typo: 3\n');
    const e = catchPolicy(() => loadPolicyFile<Doc>(p, 'rotation', schema));
    expect(e.details).toMatchObject({ line: 6, column: 3, path: '/nested/typo' });
  });

  it('points at the array item that fails', () => {
    const p = write('a.yaml', 'id: p1\nversion: 1\nevery: P1D\ntags:\n  - a\n  - c\n');
    const e = catchPolicy(() => loadPolicyFile<Doc>(p, 'rotation', schema));
    expect(e.details).toMatchObject({ line: 6, column: 5, path: '/tags/1' });
  });

  it('reports every schema problem (allErrors)', () => {
    const p = write('m.yaml', 'id: p1\nversion: 1\nevery: nope\nat: "25:00"\nnested: {n: 0}\n');
    const e = catchPolicy(() => loadPolicyFile<Doc>(p, 'rotation', schema));
    expect(e.problems.map((x) => x.path).sort()).toEqual(['/at', '/every', '/nested/n']);
  });

  it('reports a missing required field at its parent', () => {
    const p = write('r.yaml', 'id: p1\nversion: 1\n');
    const e = catchPolicy(() => loadPolicyFile<Doc>(p, 'rotation', schema));
    expect(e.details).toMatchObject({ line: 1, column: 1, path: '' });
    expect(String(e.details?.['reason'])).toContain('every');
  });

  it('rejects YAML syntax errors and duplicate keys with a position', () => {
    const p = write('d.yaml', 'id: p1\nversion: 1\nevery: P1D\nid: p2\n');
    const e = catchPolicy(() => loadPolicyFile<Doc>(p, 'rotation', schema));
    expect(e.details).toMatchObject({ line: 4 });
    const q = write('s.yaml', 'id: [p1\nversion: 1\n');
    expect(catchPolicy(() => loadPolicyFile<Doc>(q, 'rotation', schema)).code).toBe('ERR_POLICY_INVALID');
  });

  it('rejects an unreadable file', () => {
    expect(catchPolicy(() => loadPolicyFile<Doc>(join(dir, 'missing.yaml'), 'rotation', schema)).code).toBe('ERR_POLICY_INVALID');
  });

  it('runs the semantic check and maps its path to a line', () => {
    const p = write('sem.yaml', 'id: p1\nversion: 1\nevery: P1D\nnested:\n  n: 7\n');
    const e = catchPolicy(() =>
      loadPolicyFile<Doc>(p, 'rotation', schema, {
        semanticCheck: (d) => (d.nested?.n === 7 ? [{ path: ['nested', 'n'], reason: 'seven is unlucky' }] : []),
      }),
    );
    expect(e.details).toMatchObject({ line: 5, column: 6, reason: 'seven is unlucky', path: '/nested/n' });
  });
});

describe('loadPolicyDir', () => {
  it('loads yaml, yml and json files sorted by name and ignores others', () => {
    write('b.yml', 'id: b\nversion: 1\nevery: P1D\n');
    write('a.json', '{"id":"a","version":1,"every":"P1D"}');
    write('c.yaml', 'id: c\nversion: 1\nevery: P1D\n');
    write('notes.txt', 'not a policy');
    expect(loadPolicyDir<Doc>(dir, 'rotation', schema).map((p) => p.id)).toEqual(['a', 'b', 'c']);
  });

  it('rejects duplicate ids across files, naming the second file', () => {
    write('a.yaml', 'id: same\nversion: 1\nevery: P1D\n');
    const second = write('b.yaml', 'version: 1\nid: same\nevery: P1D\n');
    const e = catchPolicy(() => loadPolicyDir<Doc>(dir, 'rotation', schema));
    expect(e.details).toMatchObject({ file: second, line: 2, path: '/id' });
  });

  it('collects problems from every file', () => {
    write('a.yaml', 'id: a\nversion: 1\nevery: x\n');
    write('b.yaml', 'id: b\nversion: 1\nevery: y\n');
    expect(catchPolicy(() => loadPolicyDir<Doc>(dir, 'rotation', schema)).problems).toHaveLength(2);
  });

  it('runs the set check and locates the issue in the named policy', () => {
    write('a.yaml', 'id: a\nversion: 1\nevery: P1D\n');
    const b = write('b.yaml', 'id: b\nversion: 1\nevery: P1D\n');
    const e = catchPolicy(() =>
      loadPolicyDir<Doc>(dir, 'rotation', schema, { setCheck: (ps) => [{ index: ps.length - 1, path: ['every'], reason: 'same cadence' }] }),
    );
    expect(e.details).toMatchObject({ file: b, line: 3, column: 8 });
  });
});

describe('lintPolicies', () => {
  it('validates every registered kind under the root and reports all problems', () => {
    registerPolicyKind<Doc>('attestation', schema);
    mkdirSync(join(dir, 'attestation'));
    writeFileSync(join(dir, 'attestation', 'ok.yaml'), 'id: ok\nversion: 1\nevery: P1D\n');
    writeFileSync(join(dir, 'attestation', 'bad.yaml'), 'id: bad\nversion: 1\nevery: P1D\nextra: 1\n');
    const r = lintPolicies(dir);
    expect(r.ok).toBe(false);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toMatchObject({ line: 4, path: '/extra' });
  });

  it('passes a clean tree and fails a missing root', () => {
    registerPolicyKind<Doc>('attestation', schema);
    mkdirSync(join(dir, 'attestation'));
    writeFileSync(join(dir, 'attestation', 'ok.yaml'), 'id: ok\nversion: 1\nevery: P1D\n');
    const r = lintPolicies(dir);
    expect(r.ok).toBe(true);
    expect(r.loaded.map((l) => l.id)).toEqual(['ok']);
    expect(lintPolicies(join(dir, 'nope')).ok).toBe(false);
  });

  it('refuses a schema that does not compile in strict mode', () => {
    expect(() => registerPolicyKind('session', { type: 'object', properties: { a: { typo: 1 } } })).toThrow();
  });
});
