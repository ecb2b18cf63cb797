import { Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { apiClient, CliError, EXIT, output, type ClientOptions } from '../client.js';

interface VersionOut { version: number; state: string; kid: string; createdAt: string; activatedAt?: string; deactivatedAt?: string; destroyAt?: string; pkcs11Uri: string }
interface KeyOut { name: string; type: string; purpose: string; rotationPolicy: string | null; governingPolicy?: string | null; createdAt: string; versions: VersionOut[] }

function renderKey(k: KeyOut): string {
  const lines = [`${k.name}  ${k.type}  ${k.purpose}  policy=${k.governingPolicy ?? k.rotationPolicy ?? 'NONE (unresolved)'}  created ${k.createdAt}`];
  for (const v of k.versions) {
    lines.push(`  v${v.version}  ${v.state.padEnd(17)} kid=${v.kid}  ${v.activatedAt ? `activated ${v.activatedAt}` : ''}${v.destroyAt ? `  destroy at ${v.destroyAt}` : ''}`);
    lines.push(`       ${v.pkcs11Uri}`);
  }
  return lines.join('\n');
}

/** `custos keys create|list|show|rotate|sign|sign-batch|verify` over the HTTP API. */
export function keysCommand(globals: () => ClientOptions): Command {
  const keys = new Command('keys').description('named HSM keys and their versions');

  keys.command('create <name>')
    .description('create a key; version 1 is generated in the HSM and becomes active')
    .addOption(new Option('--type <type>', 'key type').choices(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'aes-256']).makeOptionMandatory())
    .addOption(new Option('--purpose <purpose>', 'what the key is for').choices(['sign', 'encrypt']).makeOptionMandatory())
    .option('--rotation-policy <id>', 'id of the governing rotation policy')
    .action(async (name: string, o: { type: string; purpose: string; rotationPolicy?: string }) => {
      const g = globals();
      const k = await apiClient(g).call<KeyOut>('POST', '/v1/keys', { name, type: o.type, purpose: o.purpose, ...(o.rotationPolicy ? { rotationPolicy: o.rotationPolicy } : {}) });
      output(g.json, k, () => `created ${renderKey(k)}`);
    });

  keys.command('list').description('list keys').action(async () => {
    const g = globals();
    const r = await apiClient(g).call<{ keys: KeyOut[] }>('GET', '/v1/keys');
    output(g.json, r, () => (r.keys.length === 0 ? 'no keys' : r.keys.map(renderKey).join('\n')));
  });

  keys.command('show <name>').description('show a key and its versions').action(async (name: string) => {
    const g = globals();
    const k = await apiClient(g).call<KeyOut>('GET', `/v1/keys/${encodeURIComponent(name)}`);
    output(g.json, k, () => renderKey(k));
  });

  keys.command('rotate <name>')
    .description('rotate now: a new version becomes active, the previous one verify/decrypt only')
    .option('--reason <text>', 'reason recorded in the audit log')
    .action(async (name: string, o: { reason?: string }) => {
      const g = globals();
      const v = await apiClient(g).call<VersionOut>('POST', `/v1/keys/${encodeURIComponent(name)}/rotate`, o.reason ? { reason: o.reason } : {});
      output(g.json, v, () => `${name}: v${v.version} is now ${v.state} (kid ${v.kid})`);
    });

  keys.command('sign <name>')
    .description('sign data (or a digest) with the active version')
    .option('--data <text>', 'UTF-8 text to sign')
    .option('--data-file <file>', 'file whose bytes to sign')
    .option('--digest-hex <hex>', 'pre-computed digest, hex')
    .option('--algorithm <alg>', 'RS256, PS256, … for RSA keys')
    .action(async (name: string, o: { data?: string; dataFile?: string; digestHex?: string; algorithm?: string }) => {
      const g = globals();
      const given = [o.data, o.dataFile, o.digestHex].filter((x) => x !== undefined).length;
      if (given !== 1) throw new CliError('give exactly one of --data, --data-file, --digest-hex', EXIT.usage);
      const body: Record<string, unknown> = o.digestHex !== undefined
        ? { digest: Buffer.from(o.digestHex, 'hex').toString('base64') }
        : { data: (o.dataFile !== undefined ? readFileSync(o.dataFile) : Buffer.from(o.data!, 'utf8')).toString('base64') };
      if (o.algorithm) body.algorithm = o.algorithm;
      const r = await apiClient(g).call<{ signature: string; version: number; kid: string; algorithm: string }>('POST', `/v1/keys/${encodeURIComponent(name)}/sign`, body);
      output(g.json, r, () => `${r.algorithm} signature by ${r.kid}:\n${r.signature}`);
    });
  keys.command('sign-batch <name>')
    .description('sign up to 256 files (or hex digests, one per line of a file) in one request; prints one signature per line, in order')
    .option('--digests-file <file>', 'file with one hex digest per line')
    .option('--algorithm <alg>', 'RS256, PS256, … for RSA keys')
    .argument('[files...]', 'files whose bytes to sign')
    .action(async (name: string, files: string[], o: { digestsFile?: string; algorithm?: string }) => {
      const g = globals();
      if ((o.digestsFile !== undefined) === files.length > 0) throw new CliError('give either files to sign or --digests-file', EXIT.usage);
      const batch = o.digestsFile !== undefined
        ? readFileSync(o.digestsFile, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean).map((hex) => {
          if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new CliError(`not a hex digest: ${hex.slice(0, 20)}`, EXIT.usage);
          return { digest: Buffer.from(hex, 'hex').toString('base64') };
        })
        : files.map((f) => ({ data: readFileSync(f).toString('base64') }));
      const body: Record<string, unknown> = { batch, ...(o.algorithm ? { algorithm: o.algorithm } : {}) };
      const r = await apiClient(g).call<{ signatures: string[]; version: number; kid: string; algorithm: string }>('POST', `/v1/keys/${encodeURIComponent(name)}/sign-batch`, body);
      output(g.json, r, () => r.signatures.join('\n'));
    });
  keys.command('verify <name>')
    .description('verify a signature (base64, DER for ECDSA) over data')
    .option('--data <text>', 'UTF-8 text that was signed')
    .option('--data-file <file>', 'file whose bytes were signed')
    .requiredOption('--signature <b64>', 'signature, base64')
    .option('--algorithm <alg>', 'RS256, PS256, … for RSA keys')
    .action(async (name: string, o: { data?: string; dataFile?: string; signature: string; algorithm?: string }) => {
      const g = globals();
      if ((o.data === undefined) === (o.dataFile === undefined)) throw new CliError('give exactly one of --data, --data-file', EXIT.usage);
      const data = o.dataFile !== undefined ? readFileSync(o.dataFile) : Buffer.from(o.data!, 'utf8');
      const r = await apiClient(g).call<{ valid: boolean; version?: number }>('POST', `/v1/keys/${encodeURIComponent(name)}/verify`, {
        data: data.toString('base64'), signature: o.signature, ...(o.algorithm ? { algorithm: o.algorithm } : {}),
      });
      output(g.json, r, () => (r.valid ? `valid (version ${r.version})` : 'INVALID'));
      if (!r.valid) process.exitCode = 1;
    });

  keys.command('encrypt <name>')
    .description('encrypt UTF-8 text with the active version (AES-256-GCM in the HSM)')
    .requiredOption('--plaintext <text>', 'text to encrypt')
    .option('--aad <text>', 'associated data, UTF-8')
    .action(async (name: string, o: { plaintext: string; aad?: string }) => {
      const g = globals();
      const r = await apiClient(g).call<{ ciphertext: string }>('POST', `/v1/keys/${encodeURIComponent(name)}/encrypt`, {
        plaintext: Buffer.from(o.plaintext, 'utf8').toString('base64'), ...(o.aad !== undefined ? { aad: Buffer.from(o.aad, 'utf8').toString('base64') } : {}),
      });
      output(g.json, r, () => r.ciphertext);
    });

  keys.command('decrypt <name>')
    .description('decrypt a custos:v<N>:… ciphertext; prints the plaintext as UTF-8')
    .requiredOption('--ciphertext <text>', 'custos ciphertext')
    .option('--aad <text>', 'associated data, UTF-8')
    .action(async (name: string, o: { ciphertext: string; aad?: string }) => {
      const g = globals();
      const r = await apiClient(g).call<{ plaintext: string; version: number }>('POST', `/v1/keys/${encodeURIComponent(name)}/decrypt`, {
        ciphertext: o.ciphertext, ...(o.aad !== undefined ? { aad: Buffer.from(o.aad, 'utf8').toString('base64') } : {}),
      });
      output(g.json, r, () => Buffer.from(r.plaintext, 'base64').toString('utf8'));
    });

  keys.command('public <name>')
    .description('print the PEM public key of a version')
    .option('--version <n>', 'version (default: the active one)', (v) => Number(v))
    .action(async (name: string, o: { version?: number }) => {
      const g = globals();
      const client = apiClient(g);
      let version = o.version;
      if (version === undefined) {
        const k = await client.call<KeyOut>('GET', `/v1/keys/${encodeURIComponent(name)}`);
        version = k.versions.find((v) => v.state === 'active')?.version;
        if (version === undefined) throw new Error(`${name} has no active version`);
      }
      const r = await client.call<{ pem: string; jwk: unknown }>('GET', `/v1/keys/${encodeURIComponent(name)}/versions/${version}/public`);
      output(g.json, r, () => r.pem.trimEnd());
    });
  return keys;
}
