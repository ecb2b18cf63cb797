#!/usr/bin/env node
// Offline verification of a custos session token by a relying party, with jose only.
//
//   node verify.mjs --token <jwt | @file> --jwks <https://custos.example/.well-known/jwks.json | jwks.json>
//                   --issuer <iss> --audience <aud> [--ephemeral-key <public JWK file>]
//
// Checks: the JWS signature against the issuer's JWKS (key chosen by `kid`, algorithm pinned to
// the asymmetric ones custos issues), `iss`, `aud`, `exp`/`nbf` (60 s clock tolerance), that the
// token is affirming, and that `cnf.jkt` is present. With --ephemeral-key it also checks that the
// token is bound to that key (RFC 7638 thumbprint equals cnf.jkt).
//
// Proof of possession: cnf.jkt only says WHICH key the token belongs to. A relying party that
// wants more than a bearer token must also make the presenter prove it holds the ephemeral
// private key (e.g. a DPoP proof, RFC 9449, or a signature over a fresh challenge of its own) and
// check that key's thumbprint against cnf.jkt. Without that step the token is a bearer token.
//
// Exit status: 0 valid, 1 invalid (reason on stderr), 2 usage error.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { calculateJwkThumbprint, createLocalJWKSet, createRemoteJWKSet, jwtVerify } from 'jose';

const ALGORITHMS = ['ES256', 'ES384', 'RS256', 'PS256'];

function usage(msg) {
  process.stderr.write(`${msg}\nusage: verify.mjs --token <jwt|@file> --jwks <url|file> --issuer <iss> --audience <aud> [--ephemeral-key <jwk file>]\n`);
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      token: { type: 'string' },
      jwks: { type: 'string' },
      issuer: { type: 'string' },
      audience: { type: 'string' },
      'ephemeral-key': { type: 'string' },
    },
    strict: true,
  }));
} catch (e) {
  usage(e.message);
}
for (const k of ['token', 'jwks', 'issuer', 'audience']) if (!values[k]) usage(`--${k} is required`);

const token = (values.token.startsWith('@') ? readFileSync(values.token.slice(1), 'utf8') : values.token).trim();
const keySet = /^https?:\/\//.test(values.jwks)
  ? createRemoteJWKSet(new URL(values.jwks))
  : createLocalJWKSet(JSON.parse(readFileSync(values.jwks, 'utf8')));

try {
  const { payload, protectedHeader } = await jwtVerify(token, keySet, {
    issuer: values.issuer,
    audience: values.audience,
    algorithms: ALGORITHMS,
    clockTolerance: 60,
    requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti'],
    // Only a session token: not another JWT custos signs (an attestation result, application/eat+jwt).
    typ: 'custos-session+jwt',
  });
  if (payload['ear.status'] !== 'affirming') throw new Error(`ear.status is ${JSON.stringify(payload['ear.status'])}, not affirming`);
  const jkt = payload.cnf?.jkt;
  if (typeof jkt !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(jkt)) throw new Error('cnf.jkt is missing or malformed');
  if (values['ephemeral-key']) {
    const jwk = JSON.parse(readFileSync(values['ephemeral-key'], 'utf8'));
    const thumbprint = await calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, 'sha256');
    if (thumbprint !== jkt) throw new Error('the token is bound to another key (cnf.jkt does not match the ephemeral key)');
  }
  process.stdout.write(JSON.stringify({ valid: true, kid: protectedHeader.kid, alg: protectedHeader.alg, claims: payload }, null, 2) + '\n');
} catch (e) {
  process.stderr.write(`invalid token: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
  process.exit(1);
}
