import { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { apiClient, output, type ClientOptions } from '../client.js';

interface HostOut {
  hostId: string; status: string; akName: string; ekCertificateIssuer?: string; labels: Record<string, string>;
  policyId: string; enrolledAt: string; revokedAt?: string; lastAttestation?: { status?: string; time?: string };
}

function renderHost(h: HostOut): string {
  const last = h.lastAttestation ? `last ${h.lastAttestation.status} at ${h.lastAttestation.time}` : 'never attested';
  const labels = Object.entries(h.labels).map(([k, v]) => `${k}=${v}`).join(',');
  return `${h.hostId}  ${h.status.padEnd(7)} policy=${h.policyId} ${labels ? `labels=${labels} ` : ''}${last}\n    AK ${h.akName.slice(0, 20)}…  EK issuer ${h.ekCertificateIssuer ?? '(no EK certificate)'}`;
}

function parseLabels(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of list) {
    const i = l.indexOf('=');
    if (i <= 0) throw new Error(`label ${l} must be key=value`);
    out[l.slice(0, i)] = l.slice(i + 1);
  }
  return out;
}

/** `custos hosts …`: provisioning tokens, the host registry, revocation (operator / auditor). */
export function hostsCommand(globals: () => ClientOptions): Command {
  const hosts = new Command('hosts').description('execution hosts and their enrollment');
  hosts.command('provisioning-token')
    .description('issue a provisioning token (written to a 0600 file, never printed)')
    .requiredOption('--output <file>', 'where to write the token')
    .option('--ttl-seconds <n>', 'lifetime', (v) => Number(v), 3600)
    .option('--uses <n>', 'how many enrollments it allows', (v) => Number(v), 1)
    .option('--label <k=v...>', 'labels the enrolled host gets (they select its attestation policy)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .action(async (o: { output: string; ttlSeconds: number; uses: number; label: string[] }) => {
      const g = globals();
      const r = await apiClient(g).call<{ token: string; id: string; expiresAt: string; uses: number }>('POST', '/v1/provisioning-tokens', {
        ttlSeconds: o.ttlSeconds, uses: o.uses, ...(o.label.length ? { labels: parseLabels(o.label) } : {}),
      });
      writeFileSync(o.output, r.token + '\n', { mode: 0o600 });
      const { token: _t, ...shown } = r;
      output(g.json, { ...shown, file: o.output }, () => `provisioning token ${r.id} (${r.uses} use${r.uses === 1 ? '' : 's'}, until ${r.expiresAt}) written to ${o.output}`);
    });
  hosts.command('list').action(async () => {
    const g = globals();
    const r = await apiClient(g).call<{ hosts: HostOut[] }>('GET', '/v1/hosts');
    output(g.json, r, () => (r.hosts.length ? r.hosts.map(renderHost).join('\n') : 'no hosts'));
  });
  hosts.command('show <hostId>').action(async (id: string) => {
    const g = globals();
    const h = await apiClient(g).call<HostOut>('GET', `/v1/hosts/${encodeURIComponent(id)}`);
    output(g.json, h, () => renderHost(h));
  });
  hosts.command('revoke <hostId>')
    .option('--reason <text>', 'recorded in the audit log')
    .option('--revoke-provisioning-token', 'also use up the provisioning token the host enrolled with (a shared fleet token included), so that the TPM cannot enroll again through another EK')
    .action(async (id: string, o: { reason?: string; revokeProvisioningToken?: boolean }) => {
      const g = globals();
      const body = { ...(o.reason ? { reason: o.reason } : {}), ...(o.revokeProvisioningToken ? { revokeProvisioningToken: true } : {}) };
      const h = await apiClient(g).call<HostOut & { provisioningTokenId?: string; provisioningTokenRevoked?: boolean }>('POST', `/v1/hosts/${encodeURIComponent(id)}/revoke`, body);
      output(g.json, h, () =>
        [
          `host ${h.hostId} is ${h.status}: it can no longer attest, and its sessions stop verifying`,
          ...(h.provisioningTokenId === undefined ? [] : [h.provisioningTokenRevoked === undefined
            ? `it enrolled with provisioning token ${h.provisioningTokenId}, still live if it has uses left (--revoke-provisioning-token uses them up)`
            : `provisioning token ${h.provisioningTokenId}: ${h.provisioningTokenRevoked ? 'its remaining uses are gone' : 'it had no uses left'}`]),
        ].join('\n'));
    });
  return hosts;
}
