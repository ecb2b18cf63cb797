import { openPkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { keyStoreContract } from '../../contract/key-store.contract.js';
import { startSoftHsm } from '../../helpers/softhsm.js';

keyStoreContract('PKCS#11 on SoftHSM2', async () => {
  const hsm = await startSoftHsm();
  const store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
  return {
    store,
    async cleanup() {
      await store.close();
      await hsm.cleanup();
    },
  };
});
