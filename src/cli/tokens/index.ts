import { Command, Option } from 'commander';
import { writeFileSync } from 'node:fs';
import { apiClient, output, type ClientOptions } from '../client.js';

/** `custos tokens create|list|revoke`: API tokens (admin). A new token goes to a 0600 file. */
export function tokensCommand(globals: () => ClientOptions): Command {
  const tokens = new Command('tokens').description('API tokens');
  tokens.command('create <name>')
    .addOption(new Option('--role <role>').choices(['admin', 'operator', 'auditor', 'provisioner', 'user']).makeOptionMandatory())
    .requiredOption('--output <file>', 'file to write the token to (mode 0600); tokens are never printed')
    .option('--ttl-seconds <n>', 'lifetime', (v) => Number(v))
    .action(async (name: string, o: { role: string; output: string; ttlSeconds?: number }) => {
      const g = globals();
      const r = await apiClient(g).call<{ id: string; token: string; role: string; expiresAt: string | null }>('POST', '/v1/tokens', {
        name, role: o.role, ...(o.ttlSeconds !== undefined ? { ttlSeconds: o.ttlSeconds } : {}),
      });
      writeFileSync(o.output, r.token + '\n', { mode: 0o600 });
      const { token: _t, ...shown } = r;
      output(g.json, { ...shown, file: o.output }, () => `token ${r.id} (${r.role}) written to ${o.output}`);
    });
  tokens.command('list').action(async () => {
    const g = globals();
    const r = await apiClient(g).call<{ tokens: { id: string; name: string; role: string; expiresAt: string | null; revokedAt: string | null }[] }>('GET', '/v1/tokens');
    output(g.json, r, () => r.tokens.map((t) => `${t.id}  ${t.role.padEnd(11)} ${t.name}${t.revokedAt ? '  (revoked)' : ''}`).join('\n'));
  });
  tokens.command('revoke <id>').action(async (id: string) => {
    const g = globals();
    const r = await apiClient(g).call('DELETE', `/v1/tokens/${encodeURIComponent(id)}`);
    output(g.json, r, () => `token ${id} revoked`);
  });
  return tokens;
}
