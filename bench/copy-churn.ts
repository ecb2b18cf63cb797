/**
 * Session copies over time: signs for a while through the PKCS#11 key store as custos runs it
 * (copies on, their token objects checked every 100 ms), over four keys and both workers, and
 * prints the process's resident memory and the session objects alive at intervals. A copy made
 * per use, or per check, would show as a growing RSS: SoftHSM2 frees a destroyed session
 * object's memory only at C_Finalize (about 250 bytes per copy; hsm/README.md).
 *
 *   npm run bench:copies -- [seconds=60]
 */
import { createHash, randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { openPkcs11KeyStore } from '../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm } from '../test/helpers/softhsm.js';

const seconds = Number(process.argv[2] ?? 60);
const KEYS = 4;
const IN_FLIGHT = 32;

const hsm = await startSoftHsm();
try {
  const store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, });
  const keys = await Promise.all(Array.from({ length: KEYS }, (_, i) => store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: `custos:churn${i}:v1`, type: 'ec-p256' })));
  // Looks at the session objects from a session of this process (session objects belong to the application).
  const m = new pkcs11js.PKCS11();
  m.load(hsm.module);
  try {
    m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch {
    // Initialized by the store.
  }
  const slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).label.trim() === hsm.tokenLabel)!;
  const sessionObjects = (): number => {
    const s = m.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    try {
      m.C_FindObjectsInit(s, [{ type: pkcs11js.CKA_TOKEN, value: false }]);
      const n = m.C_FindObjects(s, 10_000).length;
      m.C_FindObjectsFinal(s);
      return n;
    } finally {
      m.C_CloseSession(s);
    }
  };
  const digest = createHash('sha256').update('churn').digest();
  const end = Date.now() + seconds * 1000;
  let signed = 0;
  let next = Date.now();
  const rssMb = (): string => (process.memoryUsage().rss / 2 ** 20).toFixed(1);
  console.log(`session copies over ${seconds} s: ${KEYS} keys, ${store.stats().workers} workers, ${IN_FLIGHT} signatures in flight; copies ${store.stats().sessionCopies ? 'on' : 'off'}`);
  await Promise.all(Array.from({ length: IN_FLIGHT }, async (_, lane) => {
    while (Date.now() < end) {
      await store.sign(keys[(signed + lane) % KEYS]!.id, 'ecdsa', 'sha256', digest);
      signed++;
      if (lane === 0 && Date.now() >= next) {
        console.log(`  t=${Math.round((Date.now() - end) / 1000 + seconds)} s  signed ${signed}  rss ${rssMb()} MB  session objects ${sessionObjects()}`);
        next = Date.now() + Math.max(1000, (seconds * 1000) / 10);
      }
    }
  }));
  // While signing, at most one copy per key and worker.
  console.log(`  end: signed ${signed}  rss ${rssMb()} MB  session objects ${sessionObjects()}`);
  await store.close();
} finally {
  await hsm.cleanup();
}
