import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatPkcs11Uri, parsePkcs11Uri } from '../../../src/hsm/pkcs11-uri.js';

describe('PKCS#11 URIs (RFC 7512)', () => {
  it('formats token, id, object and type with percent-encoding', () => {
    expect(formatPkcs11Uri({ token: 'custos prod', id: '0a1B', object: 'custos:issuer:v3', type: 'private' })).toBe(
      'pkcs11:token=custos%20prod;id=%0a%1b;object=custos:issuer:v3;type=private',
    );
    expect(formatPkcs11Uri({ object: 'a;b/c?d%é' })).toBe('pkcs11:object=a%3bb%2fc%3fd%25%c3%a9');
  });

  it('parses what it formats, for any label and id', () => {
    fc.assert(
      fc.property(fc.string(), fc.uint8Array({ minLength: 1, maxLength: 32 }), fc.string(), (token, id, object) => {
        const parts = { token, id: Buffer.from(id).toString('hex'), object, type: 'secret' as const };
        expect(parsePkcs11Uri(formatPkcs11Uri(parts))).toEqual(parts);
      }),
    );
  });

  it('parses the RFC 7512 §3 examples', () => {
    expect(parsePkcs11Uri('pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=my-certificate;type=cert')).toEqual({
      token: 'The Software PKCS#11 Softtoken',
      object: 'my-certificate',
      type: 'cert',
    });
    expect(parsePkcs11Uri('pkcs11:id=%69%95%3E%5C%F4%BD%EC%91')).toEqual({ id: '69953e5cf4bdec91' });
  });

  it('rejects non-URIs, bad encodings, repeated attributes, unknown types and PINs', () => {
    for (const bad of ['pkcs12:token=a', 'pkcs11:id=%zz', 'pkcs11:token=a;token=b', 'pkcs11:type=key', 'pkcs11:object=a?pin-value=1234', 'pkcs11:=x']) {
      expect(() => parsePkcs11Uri(bad), bad).toThrow(TypeError);
    }
    expect(() => formatPkcs11Uri({ id: 'xyz' })).toThrow(TypeError);
  });
});
