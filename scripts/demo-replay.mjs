// Demo helper: asks custos for an attested session twice with the SAME evidence (nonce, quote,
// ephemeral key), as an attacker replaying captured traffic would. The first request is served,
// the replay is refused because the nonce was consumed. Prints one line per attempt.
// Usage: node scripts/demo-replay.mjs STATE_FILE AUDIENCE   (CUSTOS_URL, TPM2TOOLS_TCTI in env)
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { TpmDriver, parsePersistentHandle } from '../dist/cli/agent/tpm.js';
import { jwkThumbprint, sessionExtraData } from '../dist/sessions/ephemeral-key.js';

const [stateFile, audience] = process.argv.slice(2);
const state = JSON.parse(readFileSync(stateFile, 'utf8'));
const url = process.env.CUSTOS_URL;
const post = async (path, body) => {
  const r = await fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
};
const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
const jwk = { kty, crv, x, y };
const c = await post('/v1/challenges', { hostId: state.hostId });
const nonce = Buffer.from(c.body.nonce, 'base64');
const drv = await TpmDriver.open({});
try {
  const q = await drv.quote(parsePersistentHandle(state.akHandle), 'sha256:0,1,2,3,4,5,6,7', sessionExtraData(nonce, jwkThumbprint(jwk)));
  const body = { hostId: state.hostId, nonce: c.body.nonce, quote: q.quote.toString('base64'), signature: q.signature.toString('base64'), pcrs: q.pcrs, ephemeralPublicKey: jwk, audience };
  for (const attempt of ['first request', 'replayed request']) {
    const r = await post('/v1/sessions', body);
    console.log(`${attempt}: HTTP ${r.status} ${r.status === 201 ? `token issued (kid ${r.body.kid})` : `${r.body.error.code}: ${r.body.error.message}`}`);
  }
} finally {
  await drv.close();
}
