import { describe, expect, it } from 'vitest';
import { TPM_RH_ENDORSEMENT, akQualifiedNameUnderEk, hierarchyQualifiedName, qualifiedName } from '../../../src/attestation/qualified-name.js';
import { vec } from './vectors.js';

describe('qualified names', () => {
  it('match what the TPM reports for AKs under the RSA and the P-384 EK', () => {
    expect(akQualifiedNameUnderEk(vec('ek-rsa.name'), vec('ak-rsa.name'))).toEqual(vec('ak-rsa.qname'));
    expect(akQualifiedNameUnderEk(vec('ek-rsa.name'), vec('ak-ecc.name'))).toEqual(vec('ak-ecc.qname'));
    expect(akQualifiedNameUnderEk(vec('ek-ecc384.name'), vec('ak-ecc-under-p384.name'))).toEqual(vec('ak-ecc-under-p384.qname'));
    expect(vec('ak-ecc-under-p384.qname')).toHaveLength(50);
  });
  it('depend on the parent', () => {
    const ek = qualifiedName(hierarchyQualifiedName(TPM_RH_ENDORSEMENT), vec('ek-rsa.name'));
    expect(qualifiedName(ek, vec('ak-rsa.name'))).toEqual(vec('ak-rsa.qname'));
    expect(qualifiedName(hierarchyQualifiedName(0x40000001), vec('ak-rsa.name'))).not.toEqual(vec('ak-rsa.qname'));
  });
  it('reject malformed Names', () => {
    expect(() => qualifiedName(Buffer.alloc(4), Buffer.from([0]))).toThrow(expect.objectContaining({ code: 'ERR_TPM_MARSHAL' }));
    expect(() => qualifiedName(Buffer.alloc(4), Buffer.from([0, 0x0b, 1, 2]))).toThrow(expect.objectContaining({ code: 'ERR_TPM_MARSHAL' }));
    expect(() => qualifiedName(Buffer.alloc(4), Buffer.from([0x12, 0x34, 1, 2]))).toThrow(expect.objectContaining({ code: 'ERR_TPM_UNSUPPORTED_ALG' }));
  });
});
