import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { Swtpm } from './swtpm.js';

export interface RigDir {
  dir: string;
  /** EK trust anchors: the swtpm local CA (root and intermediate). */
  anchors: string;
  /** Policy root with the files given. */
  policies: string;
  /** CUSTOS_* variables pointing a test service at both. */
  env: NodeJS.ProcessEnv;
}

/**
 * A temp folder for an attestation test: the swtpm's local CA as EK trust anchors, and policy
 * files (path under the policy root → YAML lines).
 */
export function makeRigDir(tpm: Swtpm, files: Record<string, readonly string[]>, prefix = 'custos-rig-'): RigDir {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const anchors = join(dir, 'anchors');
  mkdirSync(anchors);
  for (const f of tpm.localCaCerts) copyFileSync(f, join(anchors, basename(f)));
  const policies = join(dir, 'policies');
  for (const [path, lines] of Object.entries(files)) {
    mkdirSync(dirname(join(policies, path)), { recursive: true });
    writeFileSync(join(policies, path), [...lines, ''].join('\n'));
  }
  return { dir, anchors, policies, env: { CUSTOS_POLICY_DIR: policies, CUSTOS_EK_CA_DIR: anchors } };
}

/** YAML lines of an attestation policy over sha256 PCRs 0–7 for hosts with one label. */
export function attestationPolicyLines(id: string, label: [string, string], referenceValues: Record<string, string> = {}, extra: readonly string[] = []): string[] {
  const refs = Object.entries(referenceValues);
  return [
    `id: ${id}`, 'version: 1', 'hosts:', '  labels:', `    ${label[0]}: ${label[1]}`,
    'enrollment:', '  requireEkCertificate: true',
    'pcrs:', '  bank: sha256', '  indices: [0, 1, 2, 3, 4, 5, 6, 7]',
    ...(refs.length ? ['  referenceValues:', ...refs.map(([i, v]) => `    "${i}": ["${v}"]`)] : []),
    ...extra,
  ];
}
