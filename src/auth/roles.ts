import type { Role } from '../store/records.js';

export type { Role };
export const ROLES: readonly Role[] = ['admin', 'operator', 'auditor', 'provisioner', 'user'];

/**
 * Who may call what, in one table (API.md "Auth"). `admin` manages keys, policies and tokens;
 * `operator` rotates keys and runs provisioning and hosts; `auditor` reads metadata, audit,
 * policies and hosts; `provisioner` may only enroll hosts; `user` (an addition to API.md's four)
 * is a workload that uses keys — sign, verify, encrypt, decrypt — without managing them.
 */
export const PERMISSIONS = {
  'keys.create': ['admin'],
  'keys.read': ['admin', 'operator', 'auditor', 'user'],
  'keys.rotate': ['admin', 'operator'],
  'keys.compromise': ['admin', 'operator'],
  'keys.cancel-destroy': ['admin', 'operator'],
  'keys.use': ['admin', 'user'],
  'tokens.manage': ['admin'],
  'provisioning-tokens.create': ['admin', 'operator'],
  'hosts.enroll': ['admin', 'operator', 'provisioner'],
  'hosts.read': ['admin', 'operator', 'auditor'],
  'hosts.revoke': ['admin', 'operator'],
  'policies.read': ['admin', 'operator', 'auditor'],
  'rotation.read': ['admin', 'operator', 'auditor'],
  'audit.read': ['admin', 'auditor'],
} as const satisfies Record<string, readonly Role[]>;

export type Permission = keyof typeof PERMISSIONS;

export function roleMay(role: Role, permission: Permission): boolean {
  return (PERMISSIONS[permission] as readonly Role[]).includes(role);
}
