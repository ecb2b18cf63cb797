import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initTokenCommand } from '../../../src/cli/hsm/init-token.js';
import { initToken } from '../../../src/hsm/pkcs11/init-token.js';
import { openPkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';

describe('token initialization', () => {
  let hsm: SoftHsm;
  beforeAll(async () => {
    hsm = await startSoftHsm();
  });
  afterAll(async () => {
    await hsm?.cleanup();
  });

  it('custos hsm init-token creates a token from PIN files once, then leaves it alone', async () => {
    const pinFile = join(hsm.dir, 'pin');
    const soPinFile = join(hsm.dir, 'so-pin');
    const pin = randomBytes(6).toString('hex');
    await writeFile(pinFile, `${pin}\n`, { mode: 0o600 });
    await writeFile(soPinFile, `${randomBytes(6).toString('hex')}\n`, { mode: 0o600 });
    const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      const args = ['--module', hsm.module, '--label', 'custos-cli', '--pin-file', pinFile, '--so-pin-file', soPinFile];
      await initTokenCommand().parseAsync(args, { from: 'user' });
      await initTokenCommand().parseAsync(args, { from: 'user' });
      const lines = out.mock.calls.map((c) => String(c[0]));
      expect(lines[0]).toMatch(/^initialized token/);
      expect(lines[1]).toMatch(/already exists/);
      expect(lines.join('')).not.toContain(pin);
    } finally {
      out.mockRestore();
    }
    const store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: 'custos-cli', pin, workers: 1 });
    try {
      const k = await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:cli:v1', type: 'ec-p256' });
      expect(k.uri).toContain('token=custos-cli');
    } finally {
      await store.close();
    }
  });

  it('reports an existing label without touching it, and refuses bad labels and PIN files', async () => {
    expect(await initToken({ module: hsm.module, label: hsm.tokenLabel, soPin: 'x', pin: 'y' })).toEqual({ created: false });
    await expect(initToken({ module: hsm.module, label: 'x'.repeat(33), soPin: 'a', pin: 'b' })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(initToken({ module: join(hsm.dir, 'nope.so'), label: 'l', soPin: 'a', pin: 'b' })).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
    const empty = join(hsm.dir, 'empty');
    await writeFile(empty, '\n', { mode: 0o600 });
    await expect(
      initTokenCommand().parseAsync(['--module', hsm.module, '--label', 'l2', '--pin-file', empty, '--so-pin-file', empty], { from: 'user' }),
    ).rejects.toMatchObject({ code: 'ERR_CONFIG' });
  });
});
