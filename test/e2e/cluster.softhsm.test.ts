import { spawnSync } from 'node:child_process';
import { createPublicKey, verify as nodeVerify } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliState, runCustos, spawnServe, type Served } from '../helpers/cli.js';
import { startSoftHsm, type SoftHsm } from '../helpers/softhsm.js';

/**
 * `custos serve` with `processes: 2` (src/cluster.ts), as real processes from the build output on
 * a real SoftHSM2 token: both processes serve; keys made by one sign in the other; the audit chain
 * they write together verifies; `/metrics` sums the group; a process that dies is replaced; a
 * process that cannot start stops the start-up with its exit code; SIGTERM stops them all.
 */
let hsm: SoftHsm;
let dir: string;
let env: NodeJS.ProcessEnv;
let served: Served;
let url = '';
let token = '';

const custos = (args: string[], extra: NodeJS.ProcessEnv = {}) => runCustos(env, args, extra);

/** One request on a connection of its own (the primary hands each new connection to the next process). */
function call(method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(`${url}${path}`, {
      method, agent: false,
      headers: { authorization: `Bearer ${token}`, ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** The server processes under the primary (their pids). */
function members(): number[] {
  const r = spawnSync('pgrep', ['-P', String(served.child.pid)], { encoding: 'utf8' });
  return r.stdout.split('\n').filter(Boolean).map(Number);
}

const waitFor = async (what: string, ok: () => boolean, ms = 15_000): Promise<void> => {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

beforeAll(async () => {
  hsm = await startSoftHsm();
  ({ dir, env } = cliState(hsm, 'custos-cluster-', { CUSTOS_PROCESSES: '2' }));
  const init = custos(['init']);
  expect(init.code, init.stderr).toBe(0);
  token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
});

afterAll(async () => {
  if (served && served.child.exitCode === null) {
    for (const pid of members()) process.kill(pid, 'SIGKILL');
    served.child.kill('SIGKILL');
  }
  await hsm?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe('custos serve with several processes', () => {
  it('refuses a process count out of range, naming the field', () => {
    for (const n of ['0', '65', 'two']) {
      const r = custos(['serve'], { CUSTOS_PROCESSES: n });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('processes');
    }
  });

  it('stops the start-up with the exit code of a process that cannot start', async () => {
    const policies = join(dir, 'bad-policies');
    mkdirSync(join(policies, 'rotation'), { recursive: true });
    writeFileSync(join(policies, 'rotation', 'broken.yaml'), 'id: [not, a, string]\n');
    const failing = spawnServe(env, { CUSTOS_POLICY_DIR: policies });
    const child = failing.child;
    failing.listening.catch(() => undefined);
    // A group that never exits would outlive the test: its processes are killed after 20 s.
    const timer = setTimeout(() => {
      spawnSync('pkill', ['-KILL', '-P', String(child.pid)]);
      child.kill('SIGKILL');
    }, 20_000);
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    clearTimeout(timer);
    expect(code).toBe(2);
    expect(failing.log()).toContain('exited before it listened');
  });

  it('starts two server processes on one address', async () => {
    served = spawnServe(env);
    const ready = await served.listening;
    expect(ready.processes).toBe(2);
    url = ready.listening;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(members()).toHaveLength(2);
  });

  it('serves from both processes: a key made in one signs in the other, and the audit chain they share verifies', async () => {
    const created = await call('POST', '/v1/keys', { name: 'shared-key', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' });
    expect(created.status, created.body).toBe(201);
    const pub = await call('GET', '/v1/keys/shared-key/versions/1/public');
    const key = createPublicKey((JSON.parse(pub.body) as { pem: string }).pem);
    // Each request on a new connection: the primary hands them to the processes in turn.
    const data = Buffer.from('signed by either process');
    const signs = await Promise.all(Array.from({ length: 12 }, () => call('POST', '/v1/keys/shared-key/sign', { data: data.toString('base64') })));
    for (const r of signs) {
      expect(r.status, r.body).toBe(200);
      expect(nodeVerify('sha256', data, key, Buffer.from((JSON.parse(r.body) as { signature: string }).signature, 'base64'))).toBe(true);
    }
    // /metrics answers for the group, whichever process gets the scrape.
    for (let i = 0; i < 3; i++) {
      const m = await call('GET', '/metrics');
      expect(m.status).toBe(200);
      expect(m.body).toMatch(/custos_http_requests_total\{method="POST",route="POST \/v1\/keys\/:name\/sign",status="200"\} 12\b/);
    }
    const file = join(dir, 'audit.jsonl');
    const keys = join(dir, 'audit-keys.json');
    const exported = custos(['audit', 'export', '--output', file], { CUSTOS_URL: url });
    expect(exported.code, exported.stderr).toBe(0);
    // The export checkpointed the head, so the audit key exists now.
    expect(custos(['audit', 'keys', '--output', keys], { CUSTOS_URL: url }).code).toBe(0);
    const verified = custos(['--json', 'audit', 'verify', '--trusted-keys', keys, file]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ ok: true, anchored: true });
    expect(readFileSync(file, 'utf8').match(/"action":"key\.sign"/g)).toHaveLength(12);
  });

  it('replaces a process that dies, and keeps serving meanwhile', async () => {
    const [victim, other] = members();
    process.kill(victim!, 'SIGKILL');
    await waitFor('a new server process', () => {
      const now = members();
      return now.length === 2 && !now.includes(victim!) && now.includes(other!);
    });
    await waitFor('the log line of the replacement', () => (served.log().match(/"msg":"server process listening"/g) ?? []).length >= 3);
    expect(served.log()).toContain('server process exited; starting it again');
    const after = await Promise.all(Array.from({ length: 8 }, () => call('POST', '/v1/keys/shared-key/sign', { digest: Buffer.alloc(32, 7).toString('base64') })));
    expect(after.map((r) => r.status)).toEqual(new Array(8).fill(200));
  });

  it('stops every process on SIGTERM, and the logs hold neither the PIN nor the token', async () => {
    const pids = members();
    const exit = new Promise<number | null>((r) => served.child.on('exit', (c) => r(c)));
    served.child.kill('SIGTERM');
    expect(await exit).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(served.log()).not.toContain(hsm.pin);
    expect(served.log()).not.toContain(token);
  });
});
