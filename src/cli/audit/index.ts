import { Command } from 'commander';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { apiClient, CliError, EXIT, output, type ClientOptions } from '../client.js';
import { auditVerifyCommand } from './verify.js';

interface EventOut { seq: number; time: string; actor: string; action: string; subject: string; outcome: string; details: Record<string, unknown> }

/** `custos audit list|export|keys|verify`: read the log, export it, fetch its keys, verify an export offline. */
export function auditCommand(globals: () => ClientOptions): Command {
  const audit = new Command('audit').description('the tamper-evident audit log');
  audit.command('list')
    .description('events after a sequence number')
    .option('--after <seq>', 'start after this seq', (v) => Number(v), 0)
    .option('--limit <n>', 'at most this many', (v) => Number(v), 50)
    .action(async (o: { after: number; limit: number }) => {
      const g = globals();
      const r = await apiClient(g).call<{ events: EventOut[] }>('GET', `/v1/audit?after=${o.after}&limit=${o.limit}`);
      output(g.json, r, () => r.events.map((e) => `${String(e.seq).padStart(6)} ${e.time} ${e.outcome.padEnd(7)} ${e.action.padEnd(24)} ${e.subject}  by ${e.actor}`).join('\n') || 'no events');
    });
  audit.command('export')
    .description('download the whole log (events, checkpoints, audit public keys) as JSON Lines')
    .requiredOption('--output <file>', 'file to write')
    .action(async (o: { output: string }) => {
      const g = globals();
      const client = apiClient(g);
      const { bytes, lines } = await download(client.url + '/v1/audit/export', o.output, client.token, g.caFile ?? process.env.CUSTOS_CA_FILE);
      output(g.json, { file: o.output, bytes, lines }, () => `exported ${lines} lines (${bytes} bytes) to ${o.output}; check it with: custos audit verify --trusted-keys <the keys from custos audit keys> ${o.output}`);
    });
  audit.command('keys')
    .description("the audit keys' public halves, to keep apart and pass to `audit verify --trusted-keys`")
    .requiredOption('--output <file>', 'file to write')
    .action(async (o: { output: string }) => {
      const g = globals();
      const r = await apiClient(g).call<{ keys: { kid: string }[] }>('GET', '/v1/audit/keys');
      writeFileSync(o.output, JSON.stringify(r, null, 2) + '\n', { mode: 0o644 });
      output(g.json, { file: o.output, kids: r.keys.map((k) => k.kid) }, () => `wrote ${r.keys.length} audit key version(s) (${r.keys.map((k) => k.kid).join(', ')}) to ${o.output}; keep it apart from the exports`);
    });
  audit.addCommand(auditVerifyCommand());
  return audit;
}

function download(url: string, file: string, token: string | undefined, caFile: string | undefined): Promise<{ bytes: number; lines: number }> {
  const u = new URL(url);
  const req = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const r = req(u, { method: 'GET', headers: token ? { authorization: `Bearer ${token}` } : {}, ...(caFile ? { ca: readFileSync(caFile) } : {}) }, (res) => {
      if (res.statusCode !== 200) {
        let t = '';
        res.on('data', (d: Buffer) => (t += d.toString()));
        res.on('end', () => reject(new CliError(`export refused: HTTP ${res.statusCode} ${t.slice(0, 300)}`, (res.statusCode ?? 500) >= 500 ? EXIT.unavailable : EXIT.refused)));
        return;
      }
      const out = createWriteStream(file, { mode: 0o600 });
      let bytes = 0;
      let lines = 0;
      let last = Date.now();
      res.on('data', (d: Buffer) => {
        bytes += d.length;
        for (const c of d) if (c === 0x0a) lines++;
        if (Date.now() - last > 1000) {
          last = Date.now();
          process.stderr.write(`export: ${lines} lines, ${bytes} bytes\n`);
        }
      });
      res.pipe(out);
      out.on('finish', () => resolve({ bytes, lines }));
      out.on('error', reject);
    });
    r.on('error', (e) => reject(new CliError(`cannot reach custos: ${e.message}`, EXIT.unavailable)));
    r.end();
  });
}
