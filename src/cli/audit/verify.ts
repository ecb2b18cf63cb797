/**
 * `custos audit verify FILE [--trusted-keys F] [--expect SEQ:HASH]… [--json] [--strict]`: verifies
 * an audit export offline (no server, no HSM) and names the first bad seq and line. Exit 0 when
 * the chain and every checkpoint verify (an unanchored tail and keys taken from the file itself
 * are warnings), 1 otherwise. Progress goes to stderr for big files.
 */
import { Command } from 'commander';
import { readFileSync, statSync } from 'node:fs';
import { loadTrustedKeys, verifyAuditExport, type AuditVerifyResult, type TrustedKey } from '../../audit/verify.js';

export interface AuditVerifyCliOptions {
  readonly json?: boolean;
  readonly strict?: boolean;
  /** A file of trusted audit keys (`custos audit keys`). */
  readonly trustedKeys?: string;
  /** Chain heads seen before, as `seq:hash`. */
  readonly expect?: readonly string[];
  /** Where progress lines go; none when undefined. */
  readonly progress?: NodeJS.WritableStream;
  /** Files at least this big get progress lines (default 16 MiB). */
  readonly progressThreshold?: number;
}

export interface AuditVerifyCliOutput {
  readonly exitCode: 0 | 1;
  readonly stdout: string;
  readonly result?: AuditVerifyResult;
}

function render(file: string, r: AuditVerifyResult): string {
  const lines: string[] = [];
  if (r.ok) {
    lines.push(`ok: ${file}: ${r.events} events (seq ${r.firstSeq ?? '-'}..${r.lastSeq ?? '-'}), ${r.validCheckpoints} checkpoints verified${r.anchored ? ' against the trusted keys' : ' (keys from the file)'}`);
  } else {
    lines.push(`FAILED: ${file}: first bad seq ${r.firstBadSeq ?? '-'} at line ${r.firstBadLine ?? '-'}`);
    for (const p of r.problems) lines.push(`${file}:${p.line}: ${p.seq === undefined ? '' : `seq ${p.seq}: `}${p.kind}: ${p.detail}`);
  }
  for (const w of r.warnings) lines.push(`warning: ${w.kind}: ${w.detail}`);
  return lines.join('\n') + '\n';
}

const WITNESS = /^([1-9][0-9]{0,14}):([0-9a-fA-F]{64})$/;

/** Verify a file and render the report; never throws for a bad or unreadable file. */
export async function runAuditVerify(file: string, opts: AuditVerifyCliOptions = {}): Promise<AuditVerifyCliOutput> {
  const refuse = (msg: string): AuditVerifyCliOutput => ({ exitCode: 1, stdout: opts.json ? JSON.stringify({ ok: false, error: msg }) + '\n' : `FAILED: ${msg}\n` });
  let trustedKeys: Map<string, TrustedKey> | undefined;
  if (opts.trustedKeys !== undefined) {
    try {
      trustedKeys = loadTrustedKeys(readFileSync(opts.trustedKeys, 'utf8'));
    } catch (e) {
      return refuse(e instanceof Error && e.message.startsWith('trusted keys') ? `${opts.trustedKeys}: ${e.message}` : `cannot read ${opts.trustedKeys}`);
    }
  }
  const witnesses: { seq: number; hash: string }[] = [];
  for (const w of opts.expect ?? []) {
    const m = WITNESS.exec(w);
    if (!m) return refuse(`--expect ${w}: expected SEQ:HASH (a seq and 64 hex digits)`);
    witnesses.push({ seq: Number(m[1]), hash: m[2]!.toLowerCase() });
  }
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return refuse(`cannot read ${file}`);
  }
  const progress = opts.progress && size >= (opts.progressThreshold ?? 16 << 20) ? opts.progress : undefined;
  let lastReport = 0;
  const started = Date.now();
  const result = await verifyAuditExport(file, {
    totalBytes: size,
    strictCanonical: opts.strict === true,
    ...(trustedKeys ? { trustedKeys } : {}),
    ...(witnesses.length > 0 ? { witnesses } : {}),
    ...(progress
      ? {
          onProgress: (p) => {
            const now = Date.now();
            if (now - lastReport < 1000 && p.bytesRead < size) return;
            lastReport = now;
            const pct = size === 0 ? 100 : Math.floor((p.bytesRead / size) * 100);
            const rate = Math.round(p.events / Math.max(0.001, (now - started) / 1000));
            progress.write(`verify: ${pct}% ${p.events} events (${rate}/s)\n`);
          },
        }
      : {}),
  });
  const stdout = opts.json ? JSON.stringify(result, null, 2) + '\n' : render(file, result);
  return { exitCode: result.ok ? 0 : 1, stdout, result };
}

/** The `verify` verb (add it under an `audit` command). */
export function auditVerifyCommand(): Command {
  return new Command('verify')
    .description('verify an audit export offline: hash chain, seq continuity, checkpoint signatures')
    .argument('<file>', 'export file (JSON Lines) from `custos audit export`')
    .option('--json', 'machine-readable output')
    .option('--strict', 'also require every event body to be RFC 8785 canonical text')
    .option('--trusted-keys <file>', 'audit public keys obtained beforehand (`custos audit keys`); checkpoints must be signed by them')
    .option('--expect <seq:hash>', 'a chain head seen before (repeatable): the file must hold that event with that hash', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .action(async (file: string, _opts: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<{ json?: boolean; strict?: boolean; trustedKeys?: string; expect?: string[] }>();
      const out = await runAuditVerify(file, {
        json: Boolean(o.json), strict: Boolean(o.strict), progress: process.stderr,
        ...(o.trustedKeys ? { trustedKeys: o.trustedKeys } : {}), ...(o.expect && o.expect.length > 0 ? { expect: o.expect } : {}),
      });
      process.stdout.write(out.stdout);
      process.exitCode = out.exitCode;
    });
}
