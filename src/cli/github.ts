/** `marina github serve`: the GitHub webhook receiver, a process of its own (README, GitHub Actions). */
import type { Command } from 'commander';
import type { LoadedConfig } from '../config/load';
import { connectClient } from '../client/jobs';
import { startWebhookServer } from '../github/server';
import { onStopSignals } from './signals';
import { UsageError } from './args';

export function registerGithubCommands(program: Command, config: () => LoadedConfig): void {
  const github = program.command('github').description('GitHub Actions: receive workflow_job webhooks');
  github
    .command('serve')
    .description('receive workflow_job webhooks and start a job (a JIT runner) for each queued job that matches a pool')
    .option('--port <port>', 'listen on this port (default: github.listen.port)')
    .option('--host <host>', 'listen on this address (default: github.listen.host)')
    .action(async (o: { port?: string; host?: string }) => {
      const cfg = config();
      if (!cfg.github) throw new UsageError(`${cfg.path} has no github: section; see README, GitHub Actions`);
      const port = o.port === undefined ? undefined : Number(o.port);
      if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536))
        throw new UsageError(`--port: "${o.port}" is not a port number`);
      const client = await connectClient(cfg);
      const server = await startWebhookServer(client, cfg, {
        ...(port !== undefined ? { port } : {}),
        ...(o.host ? { host: o.host } : {}),
      });
      // Tests and scripts read this line to learn the port.
      console.log(`marina github: listening on ${server.url}`);
      await new Promise<void>((resolve) =>
        onStopSignals(
          () => resolve(),
          () => process.exit(1),
        ),
      );
      await server.close();
      await client.connection.close();
    });
}
