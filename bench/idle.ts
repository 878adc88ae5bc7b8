/**
 * Idle cost: what a pool of static (on-prem) hosts writes to Temporal while nothing happens.
 * H hosts (default 200) are config entries that all reach one emulated Mac over real SSH, so
 * every host really is checked (SSH, `tart --version`, `tart list`) at the pool's health
 * interval (default 30 s); nothing changes, so nothing should be written. After a warm-up,
 * counts the history events of every workflow of the pool (the pool and its host workflows, all
 * runs) over the measured window, and prints events per hour, per host per hour.
 *   node --import tsx bench/idle.ts [minutes=60] [hosts=200] [healthCheckSeconds=30]
 * Goal: <= 2 events per host per hour (the pool and its host workflows added up).
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { Runtime, DefaultLogger } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import { startDevStack } from '../src/emulator/dev-stack';
import { loadConfig } from '../src/config/load';
import { createMarinaWorker } from '../src/worker';
import { poolStateQuery, poolWorkflowId } from '../workflows/definitions';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Events of every execution (every run) that carries MarinaPool = pool, by workflow type. */
async function eventsOfPool(client: Client, pool: string): Promise<Map<string, { events: number; runs: number }>> {
  const by = new Map<string, { events: number; runs: number }>();
  for await (const w of client.workflow.list({ query: `MarinaPool = '${pool}'` })) {
    const n = (await client.workflow.getHandle(w.workflowId, w.runId).describe()).historyLength;
    const t = by.get(w.type) ?? { events: 0, runs: 0 };
    t.events += n;
    t.runs++;
    by.set(w.type, t);
  }
  return by;
}

const total = (m: Map<string, { events: number }>) => [...m.values()].reduce((n, t) => n + t.events, 0);

async function main() {
  const minutes = Number(process.argv[2] ?? 60);
  const hostCount = Number(process.argv[3] ?? 200);
  const interval = Number(process.argv[4] ?? 30);
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const stateDir = mkdtempSync(join(tmpdir(), 'marina-bench-idle-'));
  const stack = await startDevStack({ stateDir, hosts: 1, headless: true, inMemory: true });
  const raw = parse(readFileSync(stack.configPath, 'utf8')) as {
    pools: Array<Record<string, unknown> & { name: string; hosts: Array<Record<string, unknown>> }>;
  };
  const local = raw.pools[0]!;
  const mac = local.hosts[0]!;
  raw.pools.push({
    ...local,
    name: 'idle',
    healthCheckSeconds: interval,
    leaseCheckSeconds: 15,
    hosts: Array.from({ length: hostCount }, (_, i) => ({ ...mac, name: `idle-${i + 1}` })),
  });
  const configPath = join(stateDir, 'bench.yaml');
  writeFileSync(configPath, stringify(raw, { aliasDuplicateObjects: false }));
  const config = loadConfig(configPath);

  const w = await createMarinaWorker(config);
  const running = w.worker.run();
  const pool = w.client.workflow.getHandle(poolWorkflowId('idle'));
  try {
    const t0 = Date.now();
    // Every host has reported once (its first check): from here on nothing changes.
    for (;;) {
      const s = await pool.query(poolStateQuery);
      const reported = Object.values(s.watchers ?? {}).filter((x) => x.lastSeq > 0).length;
      if (reported >= hostCount) break;
      if (Date.now() - t0 > 10 * 60_000) throw new Error(`only ${reported}/${hostCount} hosts reported in 10 min`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    const startup = await eventsOfPool(w.client, 'idle');
    console.log(
      `${hostCount} static hosts up and reported in ${((Date.now() - t0) / 1000).toFixed(0)} s; ` +
        `start-up wrote ${total(startup)} events (${(total(startup) / hostCount).toFixed(1)} per host)`,
    );
    // A short warm-up: the pool's first lease-check timer and the hosts' first steady checks.
    await new Promise((r) => setTimeout(r, 60_000));
    const before = await eventsOfPool(w.client, 'idle');
    const m0 = Date.now();
    await new Promise((r) => setTimeout(r, minutes * 60_000));
    const after = await eventsOfPool(w.client, 'idle');
    const hours = (Date.now() - m0) / 3_600_000;
    const s = await pool.query(poolStateQuery);
    const unhealthy = s.hosts.filter((h) => h.cordoned === 'health').length;
    console.log(
      `idle ${(hours * 60).toFixed(1)} min: ${hostCount} hosts checked every ${interval} s over SSH ` +
        `(${Math.round((hours * 3600) / interval)} checks each); ${unhealthy} cordoned`,
    );
    for (const [type, a] of after) {
      const b = before.get(type) ?? { events: 0, runs: 0 };
      console.log(
        `  ${type}: ${a.events - b.events} events (${((a.events - b.events) / hours).toFixed(1)} per hour), runs ${b.runs} -> ${a.runs}`,
      );
    }
    const perHostHour = (total(after) - total(before)) / hours / hostCount;
    console.log(
      `events per hour: ${((total(after) - total(before)) / hours).toFixed(1)}; per host per hour: ${perHostHour.toFixed(3)} (goal <= 2; the landed design wrote ~1,700)`,
    );
  } finally {
    w.worker.shutdown();
    await running.catch(() => undefined);
    await w.close();
    await stack.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
