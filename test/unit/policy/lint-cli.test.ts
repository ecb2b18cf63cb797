import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { policyCommand, runPolicyLint } from '../../../src/cli/policy/lint.js';

const REPO = join(import.meta.dirname, '..', '..', '..');

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'custos-lint-'));
  mkdirSync(join(dir, 'rotation'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
  process.exitCode = undefined;
  vi.restoreAllMocks();
});

describe('custos policy lint', () => {
  it('passes the repository policies', () => {
    const out = runPolicyLint(join(REPO, 'policies'));
    expect(out.result.errors).toEqual([]);
    expect(out.exitCode).toBe(0);
    expect(out.stdout).toMatch(/ok rotation issuer-keys .*sha256:[0-9a-f]{64}/);
  });

  it('prints file:line:column and exits 1 on a bad file', () => {
    const f = join(dir, 'rotation', 'bad.yaml');
    writeFileSync(f, 'id: bad\nversion: 1\nselector: {names: [x]}\nrotateEvery: P90D\ndeactivateAfter: P30D\ndestroyAfter: P10D\ndestroyPendingWindow: P14D\n');
    const out = runPolicyLint(dir);
    expect(out.exitCode).toBe(1);
    expect(out.stdout.split('\n')[0]).toMatch(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:6:15: destroyAfter: `));
    const json = JSON.parse(runPolicyLint(dir, { json: true }).stdout);
    expect(json.ok).toBe(false);
    expect(json.errors[0]).toMatchObject({ line: 6, column: 15, path: '/destroyAfter' });
  });

  it('runs as a commander command and sets the exit code', async () => {
    writeFileSync(join(dir, 'rotation', 'x.yaml'), 'id: x\nversion: 1\nnope: 1\n');
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    await policyCommand().exitOverride().parseAsync(['node', 'custos', 'lint', dir]);
    expect(process.exitCode).toBe(1);
    expect(write.mock.calls.map((c) => String(c[0])).join('')).toContain('x.yaml:');
  });
});
