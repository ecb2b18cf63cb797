import { createHash } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { describe, expect, it } from 'vitest';
import { KEY_TYPES } from '../../../src/hsm/key-types.js';
import { ckrError, ckrName, errorCodeForCkr } from '../../../src/hsm/pkcs11/ckr.js';
import { keyPairTemplates, keyTypeOf, secretKeyTemplate, signInput, spkiFromToken } from '../../../src/hsm/pkcs11/mechanisms.js';
import { generateKeyPairSync } from 'node:crypto';

describe('CKR mapping', () => {
  it('maps PIN, token, session, handle and decrypt failures to custos codes', () => {
    expect(errorCodeForCkr(pkcs11js.CKR_PIN_INCORRECT, 'sign')).toBe('ERR_HSM_AUTH');
    expect(errorCodeForCkr(pkcs11js.CKR_PIN_LOCKED, 'sign')).toBe('ERR_HSM_AUTH');
    expect(errorCodeForCkr(pkcs11js.CKR_USER_NOT_LOGGED_IN, 'sign')).toBe('ERR_HSM_AUTH');
    expect(errorCodeForCkr(pkcs11js.CKR_TOKEN_NOT_PRESENT, 'sign')).toBe('ERR_HSM_UNAVAILABLE');
    expect(errorCodeForCkr(pkcs11js.CKR_DEVICE_REMOVED, 'sign')).toBe('ERR_HSM_UNAVAILABLE');
    expect(errorCodeForCkr(pkcs11js.CKR_SESSION_HANDLE_INVALID, 'sign')).toBe('ERR_HSM_UNAVAILABLE');
    expect(errorCodeForCkr(pkcs11js.CKR_OBJECT_HANDLE_INVALID, 'sign')).toBe('ERR_HSM_OBJECT_NOT_FOUND');
    expect(errorCodeForCkr(pkcs11js.CKR_ENCRYPTED_DATA_INVALID, 'decrypt')).toBe('ERR_DECRYPT');
    expect(errorCodeForCkr(pkcs11js.CKR_GENERAL_ERROR, 'decrypt')).toBe('ERR_DECRYPT');
    expect(errorCodeForCkr(pkcs11js.CKR_GENERAL_ERROR, 'decrypt', true)).toBe('ERR_HSM_UNAVAILABLE');
    expect(errorCodeForCkr(pkcs11js.CKR_GENERAL_ERROR, 'sign')).toBe('ERR_HSM_UNAVAILABLE');
    expect(errorCodeForCkr(pkcs11js.CKR_KEY_FUNCTION_NOT_PERMITTED, 'sign')).toBe('ERR_KEY_PURPOSE');
    expect(errorCodeForCkr(pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID, 'sign')).toBe('ERR_HSM');
  });

  it('names CKR values and never puts more than the function and name in a message', () => {
    expect(ckrName(pkcs11js.CKR_PIN_INCORRECT)).toBe('CKR_PIN_INCORRECT');
    expect(ckrName(0x7ffffff1)).toBe('CKR_0x7ffffff1');
    const e = ckrError(pkcs11js.CKR_PIN_INCORRECT, 'sign', 'C_Login');
    expect(e.code).toBe('ERR_HSM_AUTH');
    expect(e.details).toEqual({ ckr: 'CKR_PIN_INCORRECT' });
    expect(e.message).toBe('PKCS#11 C_Login failed during sign: CKR_PIN_INCORRECT');
  });
});

describe('mechanisms and templates', () => {
  it('prefixes PKCS#1 v1.5 digests with the DigestInfo of their hash and checks digest lengths', () => {
    const d = createHash('sha384').update('x').digest();
    const { mech, data } = signInput('rsa-pkcs1', 'sha384', d);
    expect(mech).toBe('rsa-pkcs1');
    expect(data.subarray(0, 19).toString('hex')).toBe('3041300d060960864801650304020205000430');
    expect(data.subarray(19).equals(d)).toBe(true);
    expect(signInput('rsa-pss', 'sha512', Buffer.alloc(64)).mech).toBe('rsa-pss:sha512');
    expect(() => signInput('ecdsa', 'sha256', Buffer.alloc(31))).toThrow(expect.objectContaining({ code: 'ERR_BAD_DIGEST_LENGTH' }));
    expect(() => signInput('rsa-oaep' as never, 'sha256', Buffer.alloc(32))).toThrow(expect.objectContaining({ code: 'ERR_KEY_PURPOSE' }));
  });

  it('makes private and secret objects sensitive, private, token and never extractable', () => {
    const attr = (list: Array<{ type: number; value: unknown }>, type: number): unknown => list.find((a) => a.type === type)?.value;
    const { priv, pub } = keyPairTemplates(KEY_TYPES['ec-p256'], 'ab'.repeat(16), 'custos:x:v1');
    const { tpl } = secretKeyTemplate(KEY_TYPES['aes-256'], 'cd'.repeat(16), 'custos:y:v1');
    for (const t of [priv, tpl]) {
      expect(attr(t, pkcs11js.CKA_TOKEN)).toBe(true);
      expect(attr(t, pkcs11js.CKA_PRIVATE)).toBe(true);
      expect(attr(t, pkcs11js.CKA_SENSITIVE)).toBe(true);
      expect(attr(t, pkcs11js.CKA_EXTRACTABLE)).toBe(false);
      expect(attr(t, pkcs11js.CKA_DERIVE)).toBe(false);
    }
    expect(attr(priv, pkcs11js.CKA_SIGN)).toBe(true);
    expect(attr(priv, pkcs11js.CKA_DECRYPT)).toBe(false);
    expect(attr(pub, pkcs11js.CKA_TOKEN)).toBe(true);
    expect(attr(pub, pkcs11js.CKA_VERIFY)).toBe(true);
    expect(attr(tpl, pkcs11js.CKA_SIGN)).toBe(false);
    expect(attr(tpl, pkcs11js.CKA_ENCRYPT)).toBe(true);
    expect(Buffer.from(attr(priv, pkcs11js.CKA_ID) as Buffer).toString('hex')).toBe('ab'.repeat(16));
    expect(() => secretKeyTemplate(KEY_TYPES['ec-p256'], 'ab', 'x')).toThrow(expect.objectContaining({ code: 'ERR_KEY_TYPE' }));
    expect(() => keyPairTemplates(KEY_TYPES['aes-256'], 'ab', 'x')).toThrow(expect.objectContaining({ code: 'ERR_KEY_TYPE' }));
  });

  it('infers key types from token attributes and builds SPKI from a DER-wrapped EC point', () => {
    const base = { cls: 'private' as const, id: 'aa', label: 'l' };
    expect(keyTypeOf({ ...base, keyType: pkcs11js.CKK_EC, ecParams: Buffer.from('06052b81040022', 'hex') })).toBe('ec-p384');
    expect(keyTypeOf({ ...base, keyType: pkcs11js.CKK_RSA, modulusBits: 3072 })).toBe('rsa-3072');
    expect(keyTypeOf({ ...base, keyType: pkcs11js.CKK_RSA, modulusBits: 1024 })).toBeNull();
    expect(keyTypeOf({ ...base, cls: 'secret', keyType: pkcs11js.CKK_AES, valueLen: 32 })).toBe('aes-256');
    expect(keyTypeOf({ ...base, cls: 'secret', keyType: pkcs11js.CKK_AES, valueLen: 16 })).toBeNull();

    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    const point = spki.subarray(spki.length - 65);
    const wrapped = Buffer.concat([Buffer.from([0x04, 0x41]), point]);
    expect(spkiFromToken({ kind: 'ec', point: wrapped }, KEY_TYPES['ec-p256']).equals(spki)).toBe(true);
    expect(spkiFromToken({ kind: 'ec', point }, KEY_TYPES['ec-p256']).equals(spki)).toBe(true);
    expect(() => spkiFromToken({ kind: 'ec', point: Buffer.from([4, 1, 2]) }, KEY_TYPES['ec-p256'])).toThrow(expect.objectContaining({ code: 'ERR_HSM' }));
  });
});
