import { spawn } from 'node:child_process';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { pkcs11ChildEnv, startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';

// Another process logging in and out, about once a millisecond: SoftHSM2 rewrites the token's
// token.object at every C_Login, and a C_GetTokenInfo or C_Login that reads it meanwhile answers
// CKR_GENERAL_ERROR. (Back to back, two processes' logins collided 4 times in 10: with the store
// logging in over and over as well, nine tries in a row then failed now and then under load.)
// The PIN reaches the child through its environment, never argv.
const LOGIN_LOOP = `
const pkcs11js = require(process.env.PKCS11JS);
const m = new pkcs11js.PKCS11();
m.load(process.env.MODULE);
// The store's own logins race with this start too: SoftHSM2 reads its tokens at C_Initialize, and
// a token file being rewritten then reads as no token (hsm/README.md). Start again until it shows.
let slot;
for (let i = 0; !slot; i++) {
  if (i === 100) process.exit(3);
  m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).label.trim() === process.env.LABEL);
  } catch {
    // Read in the middle of a rewrite.
  }
  if (!slot) m.C_Finalize();
}
const pause = new Int32Array(new SharedArrayBuffer(4));
const end = Date.now() + Number(process.env.MS);
let logins = 0;
let refused = 0;
while (Date.now() < end) {
  const s = m.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  try {
    m.C_Login(s, pkcs11js.CKU_USER, process.env.CHILD_PIN);
    m.C_Logout(s);
    logins++;
  } catch {
    // This side of the same race (a login of the store's): not what is tested here.
    refused++;
  } finally {
    m.C_CloseSession(s);
  }
  Atomics.wait(pause, 0, 0, 1);
}
m.C_Finalize();
process.stdout.write(JSON.stringify({ logins, refused }));
`;

describe('PKCS#11 adapter on SoftHSM2: another process logging in', () => {
  let hsm: SoftHsm;
  let store: Pkcs11KeyStore;

  beforeAll(async () => {
    hsm = await startSoftHsm();
    store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
  });

  afterAll(async () => {
    await store?.close();
    await hsm?.cleanup();
  });

  /** Starts the login loop for `ms`; `done` settles with its counts once it exits with 0. */
  function loginLoop(ms: number): { running: () => boolean; done: Promise<{ logins: number; refused: number }> } {
    const child = spawn(process.execPath, ['-e', LOGIN_LOOP], {
      env: pkcs11ChildEnv(hsm, { MS: String(ms) }),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    let running = true;
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const done = new Promise<{ logins: number; refused: number }>((resolve, reject) =>
      child.on('exit', (code) => {
        running = false;
        if (code === 0) resolve(JSON.parse(out) as { logins: number; refused: number });
        else reject(new Error(`the login loop exited with ${code}`));
      }),
    );
    return { running: () => running, done };
  }

  it('keeps answering health checks and signing while another process logs in and out', async () => {
    const id = 'a1'.repeat(16);
    await store.generateKeyPair({ id, label: 'race', type: 'ec-p256' });
    const loop = loginLoop(4000);
    // Each health check asks the token for its info (C_GetTokenInfo) from a worker; 32 at a time.
    let checks = 0;
    const failures: string[] = [];
    while (loop.running() && failures.length < 100) {
      const results = await Promise.all(Array.from({ length: 32 }, () => store.health()));
      for (const h of results) {
        checks++;
        if (!h.ok) failures.push(`${h.code} ${h.part}: ${h.reason}`);
      }
    }
    const { logins } = await loop.done;
    // Enough of both for the race to have come up: without the adapter's waits this test failed
    // in every run on its own; in the whole suite on two cores it made 17,952 checks once.
    expect(logins).toBeGreaterThan(500);
    expect(checks).toBeGreaterThan(5_000);
    expect(failures.slice(0, 3)).toEqual([]);
    // Nothing was marked broken behind the health checks' back: the key still signs.
    const sig = await store.sign(id, 'ecdsa', 'sha256', Buffer.alloc(32, 7));
    expect(sig.length).toBe(64);
  }, 30_000);

  it('logs in again and signs while another process logs in and out', async () => {
    const id = 'b2'.repeat(16);
    await store.generateKeyPair({ id, label: 'race-relogin', type: 'ec-p256' });
    // Login state belongs to the application (PKCS#11 v2.40 §5.6): a C_Logout from any session of
    // this process logs the store out too, and its next signature logs in again from a worker.
    // 39–44 % of C_Logins failed with CKR_GENERAL_ERROR when two pkcs11js processes logged in
    // and out in a loop (hsm/README.md).
    const m = new pkcs11js.PKCS11();
    m.load(hsm.module);
    try {
      m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } catch {
      // CKR_CRYPTOKI_ALREADY_INITIALIZED: the store's.
    }
    const slot = m.C_GetSlotList(true).find((x) => m.C_GetTokenInfo(x).label.trim() === hsm.tokenLabel) as Buffer;
    const s = m.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    const loop = loginLoop(4000);
    let signed = 0;
    const failures: string[] = [];
    try {
      while (loop.running() && failures.length < 100) {
        try {
          m.C_Logout(s);
        } catch {
          // CKR_USER_NOT_LOGGED_IN: the store has not logged in again yet.
        }
        await store.sign(id, 'ecdsa', 'sha256', Buffer.alloc(32, 9)).then(
          () => signed++,
          (e: Error) => failures.push(e.message),
        );
        // Paced like the child: back to back, the store's own re-logins rewrote the token file so
        // often that in one loaded CI run every login of the child's failed for the 4 s.
        await new Promise((r) => setTimeout(r, 1));
      }
    } finally {
      m.C_CloseSession(s);
    }
    const { logins } = await loop.done;
    expect(logins).toBeGreaterThan(500);
    expect(signed).toBeGreaterThan(500);
    expect(failures.slice(0, 3)).toEqual([]);
  }, 30_000);
});
