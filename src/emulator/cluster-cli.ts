/**
 * `scripts/cluster.sh start|stop [DIR]`: a Temporal cluster (Postgres + the Temporal server) that stays up
 * after this command returns, for trying Marina against it by hand (`marina worker` with
 * `temporal.address` set to the address printed).
 */
import { startCluster, stopCluster } from './temporal-cluster';

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  const remove = rest.includes('--rm');
  const dir = rest.find((a) => !a.startsWith('--')) ?? '.marina/cluster';
  if (cmd === 'start') {
    const st = await startCluster(dir, (l) => console.error(`cluster: ${l}`));
    console.log(st.address);
    console.error(
      `cluster: up; Temporal frontend ${st.address}, namespace default; stop: bash scripts/cluster.sh stop ${dir}`,
    );
  } else if (cmd === 'stop') {
    await stopCluster(dir, remove);
    console.error(`cluster: stopped${remove ? ' and deleted' : ''} (${dir})`);
  } else {
    console.error('usage: cluster-cli.ts start|stop [DIR] [--rm]');
    process.exitCode = 2;
  }
}

main().catch((e: unknown) => {
  console.error(`cluster: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
