import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultStatePath, loadState, saveState, validateState, writePrivateFile, type AgentState } from '../../../src/cli/agent/state.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'custos-agent-state-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const good: AgentState = {
  version: 1,
  hostId: 'h-1',
  akHandle: '0x81010002',
  akName: '000b' + 'ab'.repeat(32),
  akAlg: 'rsa',
  ekAlg: 'ecc384',
  url: 'https://custos.example:8443',
  enrolledAt: '2026-11-23T23:00:00.000Z',
};

describe('agent state file', () => {
  it('saves with mode 0600 in a new 0700 folder and loads back', async () => {
    const path = join(dir, 'new', 'sub', 'state.json');
    await saveState(path, good);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'new', 'sub'))).mode & 0o777).toBe(0o700);
    expect(await loadState(path)).toEqual(good);
  });

  it('narrows an existing file that was world-readable to 0600 on save', async () => {
    const path = join(dir, 'wide.json');
    await writeFile(path, '{}', { mode: 0o644 });
    await saveState(path, good);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('is undefined when missing', async () => {
    expect(await loadState(join(dir, 'missing.json'))).toBeUndefined();
  });

  it('rejects non-JSON and invalid contents with ERR_BAD_REQUEST', async () => {
    const path = join(dir, 'bad.json');
    await writeFile(path, 'not json');
    await expect(loadState(path)).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    for (const change of [{ version: 2 }, { hostId: '' }, { akHandle: '0x80000001' }, { akHandle: '81010002' }, { akName: 'xyz' }, { akName: 'abc' }, { akAlg: 'dsa' }, { ekAlg: 'ecc' }, { url: 'ftp://x' }, { enrolledAt: 'yesterday' }, { labels: { a: 1 } }]) {
      await writeFile(path, JSON.stringify({ ...good, ...change }));
      await expect(loadState(path)).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    }
  });

  it('refuses to save invalid state', async () => {
    await expect(saveState(join(dir, 'x.json'), { ...good, hostId: '' })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    expect(() => validateState([])).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
  });

  it('writes private files 0600, replacing older content', async () => {
    const path = join(dir, 'keys', 'session.key');
    await writePrivateFile(path, Buffer.alloc(32, 1));
    await writePrivateFile(path, Buffer.alloc(32, 2));
    expect(await readFile(path)).toEqual(Buffer.alloc(32, 2));
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('defaults to ~/.config/custos-agent/state.json, or XDG_CONFIG_HOME when absolute', () => {
    expect(defaultStatePath({ XDG_CONFIG_HOME: '/cfg' })).toBe('/cfg/custos-agent/state.json');
    expect(defaultStatePath({ XDG_CONFIG_HOME: 'relative' })).toMatch(/\.config\/custos-agent\/state\.json$/);
  });
});
