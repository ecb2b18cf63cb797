import { Command } from 'commander';
import { apiClient, output, type ClientOptions } from '../client.js';

interface PlanOut {
  days: number;
  steps: { key: string; version: number | null; action: string; dueAt: string; reason: string; policyId: string; destroyAt?: string }[];
  unresolved: { key: string; code: string; message: string }[];
}

/** `custos rotation plan`: what the scheduler will do, and when (GET /v1/rotation/plan). */
export function rotationCommand(globals: () => ClientOptions): Command {
  const rotation = new Command('rotation').description('rotation schedules');
  rotation.command('plan')
    .description('every rotation, activation, deactivation and destruction due in the next N days')
    .option('--days <n>', 'horizon in days', (v) => Number(v), 30)
    .action(async (o: { days: number }) => {
      const g = globals();
      const p = await apiClient(g).call<PlanOut>('GET', `/v1/rotation/plan?days=${encodeURIComponent(String(o.days))}`);
      output(g.json, p, () => {
        const lines = p.steps.map((s) => `${s.dueAt}  ${s.key.padEnd(24)} ${s.version === null ? '   ' : `v${s.version}`.padEnd(3)} ${s.action.padEnd(18)} ${s.policyId}  ${s.reason}`);
        if (lines.length === 0) lines.push(`nothing due in the next ${p.days} days`);
        for (const u of p.unresolved) lines.push(`UNRESOLVED ${u.key}: ${u.code} ${u.message}`);
        return lines.join('\n');
      });
      if (p.unresolved.length > 0) process.exitCode = 1;
    });
  rotation.command('report')
    .description('keys overdue, versions past their NIST SP 800-57 cryptoperiod, upcoming destructions')
    .action(async () => {
      const g = globals();
      const r = await apiClient(g).call<ReportOut>('GET', '/v1/rotation/report');
      output(g.json, r, () => renderReport(r));
      if (r.overdue.length > 0 || r.pastCryptoperiod.length > 0 || r.unresolved.length > 0) process.exitCode = 1;
    });
  return rotation;
}

interface ReportOut {
  generatedAt: string;
  overdue: { key: string; version?: number; action: string; dueAt: string; overdueMs: number; policyId: string }[];
  pastCryptoperiod: { key: string; version: number; state: string; period: string; limit: string }[];
  upcomingDestructions: { key: string; version: number; destroyAt: string; scheduled: boolean }[];
  upcomingRotations: { key: string; at: string; policyId: string }[];
  unresolved: { key: string; code: string; message: string }[];
}

function renderReport(r: ReportOut): string {
  const out = [`rotation report at ${r.generatedAt}`];
  const section = (title: string, rows: string[]) => out.push(`\n${title} (${rows.length})`, ...(rows.length ? rows.map((x) => `  ${x}`) : ['  none']));
  section('overdue', r.overdue.map((o) => `${o.key}${o.version ? ` v${o.version}` : ''} ${o.action} due ${o.dueAt} (${Math.round(o.overdueMs / 60_000)} min late, ${o.policyId})`));
  section('past cryptoperiod (NIST SP 800-57 Part 1 Rev. 5)', r.pastCryptoperiod.map((p) => `${p.key} v${p.version} ${p.state}: beyond the ${p.period} period of ${p.limit}`));
  section('upcoming destructions', r.upcomingDestructions.map((d) => `${d.key} v${d.version} at ${d.destroyAt}${d.scheduled ? ' (scheduled, cancellable)' : ''}`));
  section('upcoming rotations', r.upcomingRotations.map((u) => `${u.key} at ${u.at} (${u.policyId})`));
  section('unresolved', r.unresolved.map((u) => `${u.key}: ${u.code} ${u.message}`));
  return out.join('\n');
}
