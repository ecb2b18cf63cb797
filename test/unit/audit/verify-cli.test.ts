import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { auditVerifyCommand, runAuditVerify } from '../../../src/cli/audit/verify.js';
import { makeCheckpoint, makeEvents, makeSigner, writeExport } from './fixtures.js';

let dir: string;
let good: string;
let bad: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'custos-audit-cli-'));
  const signer = makeSigner();
  const events = makeEvents(20);
  good = join(dir, 'good.jsonl');
  await writeExport(good, events, [makeCheckpoint(signer, events[19]!)], [signer.keyLine]);
  bad = join(dir, 'bad.jsonl');
  writeFileSync(bad, readFileSync(good, 'utf8').replace('"n":7,', '"n":70,'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('custos audit verify', () => {
  it('exits 0 on a good export and reports the counts', async () => {
    const out = await runAuditVerify(good);
    expect(out.exitCode).toBe(0);
    expect(out.stdout).toContain('20 events');
  });

  it('exits 1 and names the first bad seq and line', async () => {
    const out = await runAuditVerify(bad);
    expect(out.exitCode).toBe(1);
    expect(out.stdout).toMatch(/first bad seq 7 at line \d+/);
    const json = JSON.parse((await runAuditVerify(bad, { json: true })).stdout);
    expect(json).toMatchObject({ ok: false, firstBadSeq: 7 });
  });

  it('exits 1 for a missing file', async () => {
    expect((await runAuditVerify(join(dir, 'nope.jsonl'))).exitCode).toBe(1);
  });

  it('writes progress for files above the threshold', async () => {
    const progress = new PassThrough();
    let text = '';
    progress.on('data', (c) => (text += String(c)));
    await runAuditVerify(good, { progress, progressThreshold: 0 });
    expect(text).toMatch(/verify: 100% 20 events/);
  });

  it('runs as a commander command', async () => {
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      await auditVerifyCommand().exitOverride().parseAsync(['node', 'custos', bad, '--json']);
      expect(process.exitCode).toBe(1);
      expect(JSON.parse(write.mock.calls.map((c) => String(c[0])).join('')).firstBadSeq).toBe(7);
    } finally {
      write.mockRestore();
      process.exitCode = undefined;
    }
  });
});
