/**
 * Session-copy churn: signs for a while through the PKCS#11 key store with copies remade far more
 * often than custos does (`copyTtlMs` 1 ms instead of 100), over several keys and both workers, and
 * prints the process's resident memory and the session objects alive at intervals. Copies that
 * leaked (made but never destroyed) would show as a growing count of session objects, a module
 * that leaked memory on each copy as a growing RSS.
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
  const store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, copyTtlMs: 1 });
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
  console.log(`copy churn: ${KEYS} keys, ${store.stats().workers} workers, copies remade every 1 ms, ${seconds} s; session copies: ${store.stats().sessionCopies}`);
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
  await new Promise((r) => setTimeout(r, 50));
  // While signing, at most one copy per key and worker; 50 ms after the last signature, none.
  console.log(`  end, 50 ms after the last signature: signed ${signed}  rss ${rssMb()} MB  session objects ${sessionObjects()}`);
  await store.close();
} finally {
  await hsm.cleanup();
}
