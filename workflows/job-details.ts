/** What the Web UI shows of a running or ended job (its current details): state first, then facts. */
import type { JobStatus } from './definitions';

export function jobDetails(s: JobStatus): string {
  const lines = [
    `**${s.state}**${s.exitCode !== undefined ? ` · exit ${s.exitCode}` : ''}${s.host ? ` · ${s.host}` : ''}`,
  ];
  const stages = Object.entries(s.stages)
    .map(([k, v]) => `${k} ${((v ?? 0) / 1000).toFixed(1)}s`)
    .join(' · ');
  if (stages) lines.push(`stages: ${stages}`);
  if (s.hostsLost?.length) lines.push(`hosts lost: ${s.hostsLost.join('; ')}`);
  if (s.error) lines.push(`error: ${s.error}`);
  return lines.join('\n\n');
}
