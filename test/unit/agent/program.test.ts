import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent, type AgentIo } from '../../../src/cli/agent/program.js';
import { saveState } from '../../../src/cli/agent/state.js';
import { DEFAULT_TCTI, handleHex, parsePersistentHandle, resolveTcti } from '../../../src/cli/agent/tpm.js';

let dir: string;
let enrolled: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'custos-agent-args-'));
  enrolled = join(dir, 'state.json');
  await saveState(enrolled, { version: 1, hostId: 'h-1', akHandle: '0x81010002', akName: '000b' + '00'.repeat(32), akAlg: 'ecc', ekAlg: 'rsa', enrolledAt: new Date(0).toISOString() });
  await writeFile(join(dir, 'empty'), '');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function agent(args: string[], env: NodeJS.ProcessEnv = {}) {
  let out = '';
  let err = '';
  // The TCTI points at a closed port: none of these cases may reach a TPM.
  const io: AgentIo = { stdout: (t) => (out += t), stderr: (t) => (err += t), env: { HOME: dir, TPM2TOOLS_TCTI: 'swtpm:host=127.0.0.1,port=1', ...env } };
  const code = await runAgent(['node', 'custos-agent', ...args], io);
  return { code, out, err };
}

describe('custos-agent argument validation (exit 2)', () => {
  const cases: Array<[string, string[]]> = [
    ['an unknown command', ['frobnicate']],
    ['an unknown option', ['attest', '--frob']],
    ['an EK type outside rsa|ecc384', ['--url', 'http://127.0.0.1:1', 'enroll', '--ek', 'ecc']],
    ['an AK type outside rsa|ecc', ['--url', 'http://127.0.0.1:1', 'enroll', '--ak', 'ecc384']],
    ['a non-persistent AK handle', ['--url', 'http://127.0.0.1:1', 'enroll', '--ak-handle', '0x80000002']],
    ['a malformed AK handle', ['--url', 'http://127.0.0.1:1', 'enroll', '--ak-handle', 'persist']],
    ['a label without =', ['--url', 'http://127.0.0.1:1', 'enroll', '--label', 'role']],
    ['a missing provisioning token file', ['--url', 'http://127.0.0.1:1', 'enroll', '--provisioning-token-file', '/nonexistent/pt']],
    ['an empty provisioning token file', ['--url', 'http://127.0.0.1:1', 'enroll', '--provisioning-token-file', '__EMPTY__']],
    ['a bad PCR list', ['attest', '--pcrs', 'sha256:0,99']],
    ['a PCR list with an unknown bank', ['attest', '--pcrs', 'md5:0']],
    ['session without --audience', ['session']],
    ['session with an empty audience', ['--state', '__STATE__', '--url', 'http://127.0.0.1:1', 'session', '--audience', ' ']],
    ['session writing key and token to one file', ['--state', '__STATE__', '--url', 'http://127.0.0.1:1', 'session', '--audience', 'a', '--key-out', '/tmp/x', '--token-out', '/tmp/x']],
    ['pcr extend with index 24', ['pcr', 'extend', '--index', '24', '--data', 'x']],
    ['pcr extend with a negative index', ['pcr', 'extend', '--index', '-1', '--data', 'x']],
    ['pcr extend with an unknown bank', ['pcr', 'extend', '--index', '1', '--data', 'x', '--bank', 'md5']],
    ['pcr extend without --data', ['pcr', 'extend', '--index', '1']],
    ['attest before enrollment', ['--state', '__MISSING__', '--url', 'http://127.0.0.1:1', 'attest']],
    ['attest without any server URL', ['--state', '__STATE__', 'attest']],
    ['a URL that is not http(s)', ['--state', '__STATE__', '--url', 'ftp://x', 'attest']],
  ];
  for (const [what, args] of cases) {
    it(`refuses ${what}`, async () => {
      const real = args.map((a) => (a === '__STATE__' ? enrolled : a === '__MISSING__' ? join(dir, 'none.json') : a === '__EMPTY__' ? join(dir, 'empty') : a));
      const r = await agent(real);
      expect(r.code).toBe(2);
      expect(r.out).toBe('');
      expect(r.err).not.toBe('');
    });
  }

  it('prints help with exit 0', async () => {
    const r = await agent(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/enroll/);
    expect(r.out).toMatch(/session/);
  });
});

describe('custos-agent unavailable server (exit 3)', () => {
  it('attest with the server down exits 3 and names the URL', async () => {
    const r = await agent(['--state', enrolled, '--url', 'http://127.0.0.1:1', 'attest']);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/127\.0\.0\.1:1/);
  });

  it('takes the URL from CUSTOS_URL', async () => {
    const r = await agent(['--state', enrolled, 'attest'], { CUSTOS_URL: 'http://127.0.0.1:1' });
    expect(r.code).toBe(3);
  });
});

describe('driver helpers', () => {
  it('parses persistent handles', () => {
    expect(parsePersistentHandle('0x81010002')).toBe(0x81010002);
    expect(parsePersistentHandle(String(0x81000000))).toBe(0x81000000);
    for (const bad of ['0x80000000', '0x82000000', '0x', 'x81010002', '-1', '0x181010002', 0x1000]) {
      expect(() => parsePersistentHandle(bad)).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    }
    expect(handleHex(0x1c00002)).toBe('0x01c00002');
  });

  it('picks the TCTI from the flag, then TPM2TOOLS_TCTI, then the kernel resource manager', () => {
    expect(resolveTcti('swtpm:port=1', { TPM2TOOLS_TCTI: 'mssim' })).toBe('swtpm:port=1');
    expect(resolveTcti(undefined, { TPM2TOOLS_TCTI: 'mssim' })).toBe('mssim');
    expect(resolveTcti(undefined, { TPM2TOOLS_TCTI: ' ' })).toBe(DEFAULT_TCTI);
    expect(resolveTcti(undefined, {})).toBe('device:/dev/tpmrm0');
  });
});
