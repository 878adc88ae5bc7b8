/**
 * A real Temporal cluster on this machine: the Temporal server built from its Go module
 * (`scripts/cluster.sh build`) on PostgreSQL from Debian, with the schema applied by the module's own
 * `temporal-sql-tool`. Unlike the dev server it keeps history and visibility in Postgres and runs the
 * four services (frontend, history, matching, worker) as a production deployment would, so a test can
 * SIGKILL the server process and start it again on the same database.
 *
 * Every process is recorded in the cluster directory (pid files, cluster.json), so one process can start
 * the cluster and another (a test, `scripts/cluster.sh stop`) kill, restart or stop it.
 */
import { execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { SEARCH_ATTRIBUTES } from '../../workflows/definitions';
import { MissingBinaryError } from '../tools/binaries';
import { freePort, waitFor } from './processes';

const ROOT = resolve(__dirname, '..', '..');
/** One place for the server version: scripts/cluster.sh builds the version this file names. */
export const TEMPORAL_SERVER_VERSION = readFileSync(
  join(ROOT, 'deploy/cluster/temporal-server.version'),
  'utf8',
).trim();

/** Dev credentials of the throw-away database (loopback only, scram-sha-256 like a real deployment). */
const DB_USER = 'temporal';
const DB_PASSWORD = 'temporal';
const NAMESPACE = 'default';

export interface ClusterBinaries {
  server: string;
  sqlTool: string;
  /** schema/postgresql/v12 from the same module version */
  schemaDir: string;
}

/** Where `scripts/cluster.sh build` leaves the binaries; shared by every clone on the machine. */
export function clusterBuildDir(): string {
  const base = process.env.MARINA_CLUSTER_CACHE ?? join(homedir(), '.cache', 'marina');
  return join(base, `temporal-server-${TEMPORAL_SERVER_VERSION}`);
}

export function clusterBinaries(): ClusterBinaries {
  const dir = clusterBuildDir();
  const b = { server: join(dir, 'bin', 'server'), sqlTool: join(dir, 'bin', 'sql'), schemaDir: join(dir, 'schema') };
  for (const p of Object.values(b))
    if (!existsSync(p)) throw new MissingBinaryError(`${p} is missing: run \`bash scripts/cluster.sh build\``);
  return b;
}

/** PostgreSQL's server programs (initdb, pg_ctl): Debian keeps them per major version. */
export function postgresBinDir(): string {
  if (process.env.MARINA_PG_BIN_DIR) return process.env.MARINA_PG_BIN_DIR;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((v) => existsSync(join(base, v, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (!versions[0])
    throw new MissingBinaryError(
      'PostgreSQL server not found: run `bash scripts/cluster.sh build` (apt-get install postgresql)',
    );
  return join(base, versions[0], 'bin');
}

/** What a started cluster left in its directory, for whoever stops or restarts it. */
export interface ClusterState {
  dir: string;
  address: string;
  pgDir: string;
  pgPort: number;
  /** the namespace and search attributes are in place (a restart waits for the namespace to serve) */
  registered?: boolean;
}

const statePath = (dir: string) => join(dir, 'cluster.json');
export const readClusterState = (dir: string): ClusterState =>
  JSON.parse(readFileSync(statePath(dir), 'utf8')) as ClusterState;

/** Postgres refuses to run as root: as root, its programs run as the `postgres` user. */
function asPostgres(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

function runPg(bin: string, args: string[]): void {
  const [c, a] = asPostgres(join(postgresBinDir(), bin), args);
  execFileSync(c, a, { stdio: ['ignore', 'pipe', 'pipe'] });
}

async function startPostgres(pgDir: string, port: number): Promise<void> {
  const data = join(pgDir, 'data');
  if (!existsSync(join(data, 'PG_VERSION'))) {
    const pw = join(pgDir, 'pwfile');
    writeFileSync(pw, DB_PASSWORD, { mode: 0o600 });
    if (process.getuid?.() === 0) {
      const { uid, gid } = postgresUser();
      chownSync(pgDir, uid, gid);
      chownSync(pw, uid, gid);
    }
    runPg('initdb', ['-D', data, '-U', DB_USER, `--pwfile=${pw}`, '--auth=scram-sha-256', '-E', 'UTF8', '--no-locale']);
    rmSync(pw);
  }
  // Loopback TCP only; the socket lives in the data directory, not in /var/run/postgresql.
  const opts = `-p ${port} -c listen_addresses=127.0.0.1 -k ${data}`;
  runPg('pg_ctl', ['-D', data, '-l', join(pgDir, 'postgres.log'), '-o', opts, '-w', '-t', '60', 'start']);
}

function postgresUser(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line)
    throw new MissingBinaryError('no postgres user: run `bash scripts/cluster.sh build` (apt-get install postgresql)');
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

function sqlTool(bins: ClusterBinaries, pgPort: number, db: string, args: string[]): void {
  execFileSync(
    bins.sqlTool,
    ['--plugin', 'postgres12', '--ep', '127.0.0.1', '-p', String(pgPort), '-u', DB_USER, '--db', db, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SQL_PASSWORD: DB_PASSWORD } },
  );
}

/** Creates both databases and brings them to the module's newest schema version; a no-op when they are. */
function setupSchema(bins: ClusterBinaries, pgPort: number): void {
  for (const [db, schema] of [
    ['temporal', 'temporal'],
    ['temporal_visibility', 'visibility'],
  ] as const) {
    try {
      sqlTool(bins, pgPort, db, ['create-database']);
    } catch (e) {
      // Only "it is already there" is fine (a restarted cluster); anything else stops the start.
      if (!String((e as { stderr?: Buffer }).stderr ?? e).includes('already exists')) throw e;
    }
    // setup-schema -v 0.0 creates only the schema version tables (update-schema then applies every
    // versioned step); it runs once, on a database without them, so a restart keeps its data.
    if (!schemaVersionTableExists(pgPort, db)) sqlTool(bins, pgPort, db, ['setup-schema', '-v', '0.0']);
    sqlTool(bins, pgPort, db, ['update-schema', '-d', join(bins.schemaDir, schema, 'versioned')]);
  }
}

function schemaVersionTableExists(pgPort: number, db: string): boolean {
  const out = execFileSync(
    'psql',
    [
      '-h',
      '127.0.0.1',
      '-p',
      String(pgPort),
      '-U',
      DB_USER,
      '-d',
      db,
      '-tAc',
      "select to_regclass('schema_version') is not null",
    ],
    { env: { ...process.env, PGPASSWORD: DB_PASSWORD }, encoding: 'utf8' },
  );
  return out.trim() === 't';
}

interface Ports {
  frontend: number;
  frontendHttp: number;
  history: number;
  matching: number;
  worker: number;
  membership: [number, number, number, number];
}

function serverConfig(pgPort: number, p: Ports, dynamicConfigFile: string): Record<string, unknown> {
  const sql = (databaseName: string, maxConns: number) => ({
    sql: {
      pluginName: 'postgres12',
      databaseName,
      connectAddr: `127.0.0.1:${pgPort}`,
      connectProtocol: 'tcp',
      user: DB_USER,
      password: DB_PASSWORD,
      maxConns,
      maxIdleConns: maxConns,
      maxConnLifetime: '1h',
    },
  });
  const rpc = (grpcPort: number, membershipPort: number, extra: Record<string, unknown> = {}) => ({
    rpc: { grpcPort, membershipPort, bindOnLocalHost: true, ...extra },
  });
  return {
    log: { stdout: true, level: 'warn' },
    persistence: {
      defaultStore: 'postgres-default',
      visibilityStore: 'postgres-visibility',
      numHistoryShards: 4,
      datastores: { 'postgres-default': sql('temporal', 20), 'postgres-visibility': sql('temporal_visibility', 10) },
    },
    global: { membership: { maxJoinDuration: '30s', broadcastAddress: '127.0.0.1' } },
    services: {
      frontend: rpc(p.frontend, p.membership[0], { httpPort: p.frontendHttp }),
      history: rpc(p.history, p.membership[1]),
      matching: rpc(p.matching, p.membership[2]),
      worker: rpc(p.worker, p.membership[3]),
    },
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: {
        active: {
          enabled: true,
          initialFailoverVersion: 1,
          rpcName: 'frontend',
          rpcAddress: `127.0.0.1:${p.frontend}`,
        },
      },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    archival: { history: { state: 'disabled' }, visibility: { state: 'disabled' } },
    namespaceDefaults: { archival: { history: { state: 'disabled' }, visibility: { state: 'disabled' } } },
    dynamicConfigClient: { filepath: dynamicConfigFile, pollInterval: '10s' },
  };
}

/** Dynamic config: search attributes a client just added are seen at once (as on the dev server). */
const DYNAMIC_CONFIG = {
  'system.forceSearchAttributesCacheRefreshOnRead': [{ value: true, constraints: {} }],
  'limit.maxIDLength': [{ value: 255, constraints: {} }],
};

const pidFile = (dir: string) => join(dir, 'temporal.pid');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The Temporal server's pid, when it is running. */
export function temporalServerPid(dir: string): number | undefined {
  if (!existsSync(pidFile(dir))) return undefined;
  const pid = Number(readFileSync(pidFile(dir), 'utf8'));
  return pid > 0 && alive(pid) ? pid : undefined;
}

/**
 * Starts the Temporal server of an initialised cluster directory (again, after a kill) and waits until
 * its frontend serves the namespace. Detached: it outlives the process that started it.
 */
export async function startTemporalServer(dir: string, timeoutMs = 120_000): Promise<void> {
  const st = readClusterState(dir);
  if (temporalServerPid(dir)) throw new Error(`the Temporal server of ${dir} is already running`);
  const fd = openSync(join(dir, 'temporal.log'), 'a');
  const child = spawn(
    clusterBinaries().server,
    ['--config-file', join(dir, 'temporal.yaml'), '--allow-no-auth', 'start'],
    { cwd: dir, stdio: ['ignore', fd, fd], detached: true },
  );
  child.unref();
  writeFileSync(pidFile(dir), String(child.pid));
  let exit: string | undefined;
  child.once('exit', (code, signal) => (exit = `exited (${signal ?? code}) before it served`));
  // waitFor swallows a check's error: an exited server is told apart after the wait.
  await waitFor(
    `Temporal server on ${st.address}`,
    async () => exit !== undefined || frontendServes(st.address, !!st.registered),
    timeoutMs,
  ).catch((e: unknown) => {
    throw new Error(`${String(e)} (log: ${join(dir, 'temporal.log')})`);
  });
  if (exit) throw new Error(`the Temporal server ${exit}; see ${join(dir, 'temporal.log')}`);
}

/**
 * A free port below 32768 for a service's membership (ringpop) port: the SQL schema keeps it in a
 * `smallint` (cluster_membership.rpc_port), so a port from the kernel's ephemeral range (32768 and up)
 * makes the server exit at start with "value out of range for type smallint".
 */
async function membershipPort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await canListen(port)) return port;
  }
  throw new Error('no free port in 20000-31999 for the Temporal membership ports');
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** The frontend answers for the namespace (and, once registered, lists workflows from visibility). */
async function frontendServes(address: string, needNamespace: boolean): Promise<boolean> {
  const c = await Connection.connect({ address, connectTimeout: 1000 });
  try {
    await c.workflowService.getSystemInfo({});
    if (needNamespace) {
      await c.workflowService.describeNamespace({ namespace: NAMESPACE });
      await c.workflowService.listWorkflowExecutions({ namespace: NAMESPACE, pageSize: 1 });
    }
    return true;
  } catch {
    return false;
  } finally {
    await c.close();
  }
}

/** Kills the server process (SIGKILL: a crash) or stops it (SIGTERM, then SIGKILL after 10 s). */
export async function stopTemporalServer(dir: string, signal: 'SIGKILL' | 'SIGTERM' = 'SIGTERM'): Promise<void> {
  const pid = temporalServerPid(dir);
  if (!pid) return;
  const kill = (s: NodeJS.Signals) => {
    try {
      process.kill(-pid, s); // its process group: it was started detached
    } catch {
      /* gone */
    }
  };
  kill(signal);
  const deadline = Date.now() + 10_000;
  while (alive(pid)) {
    if (Date.now() > deadline) kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 100));
  }
  rmSync(pidFile(dir), { force: true });
}

async function registerNamespace(address: string): Promise<void> {
  const c = await Connection.connect({ address });
  try {
    // Retried: the frontend answers before the history service has its shards.
    await waitFor(
      `namespace ${NAMESPACE} registered`,
      () =>
        c.workflowService
          .registerNamespace({ namespace: NAMESPACE, workflowExecutionRetentionPeriod: msToTs('3 days') })
          .then(
            () => true,
            (e: unknown) => /already exists/i.test(String(e)),
          ),
      60_000,
    );
    await waitFor(`namespace ${NAMESPACE}`, () => frontendServes(address, true), 60_000);
    const existing = await c.operatorService.listSearchAttributes({ namespace: NAMESPACE });
    const missing = Object.keys(SEARCH_ATTRIBUTES).filter((n) => !(n in (existing.customAttributes ?? {})));
    if (missing.length)
      await c.operatorService.addSearchAttributes({
        namespace: NAMESPACE,
        // INDEXED_VALUE_TYPE_KEYWORD: every Marina attribute is a Keyword (SEARCH_ATTRIBUTES says so).
        searchAttributes: Object.fromEntries(missing.map((n) => [n, 2])),
      });
  } finally {
    await c.close();
  }
}

/**
 * Starts (or, when `dir` holds a stopped cluster, restarts) PostgreSQL and the Temporal server, with the
 * schema, the `default` namespace and Marina's search attributes. Returns the frontend address.
 */
export async function startCluster(dirArg: string, log: (l: string) => void = () => undefined): Promise<ClusterState> {
  const dir = resolve(dirArg);
  mkdirSync(dir, { recursive: true });
  const bins = clusterBinaries();
  let st: ClusterState;
  if (existsSync(statePath(dir))) {
    st = readClusterState(dir);
    if (!existsSync(join(st.pgDir, 'data', 'PG_VERSION'))) {
      // Its database is gone (a temp directory cleared by a reboot): start from an empty one.
      mkdirSync(st.pgDir, { recursive: true, mode: 0o700 });
      st.registered = false;
      writeFileSync(statePath(dir), JSON.stringify(st, null, 2));
    }
  } else {
    // Its own temp directory: the postgres user must reach it, whatever the permissions above `dir`.
    const pgDir = mkdtempSync(join(tmpdir(), 'marina-pg-'));
    chmodSync(pgDir, 0o700);
    const pgPort = await freePort();
    const ports: Ports = {
      frontend: await freePort(),
      frontendHttp: await freePort(),
      history: await freePort(),
      matching: await freePort(),
      worker: await freePort(),
      membership: [await membershipPort(), await membershipPort(), await membershipPort(), await membershipPort()],
    };
    st = { dir, address: `127.0.0.1:${ports.frontend}`, pgDir, pgPort };
    const dyn = join(dir, 'dynamicconfig.yaml');
    writeFileSync(dyn, stringify(DYNAMIC_CONFIG));
    writeFileSync(
      join(dir, 'temporal.yaml'),
      `# Written by Marina's cluster module (src/emulator/temporal-cluster.ts).\n${stringify(serverConfig(pgPort, ports, dyn))}`,
    );
    writeFileSync(statePath(dir), JSON.stringify(st, null, 2));
  }
  log(`starting PostgreSQL on 127.0.0.1:${st.pgPort} (${st.pgDir})`);
  await startPostgres(st.pgDir, st.pgPort);
  log('applying the Temporal schema (temporal-sql-tool)');
  setupSchema(bins, st.pgPort);
  log(`starting Temporal server ${TEMPORAL_SERVER_VERSION} on ${st.address}`);
  await startTemporalServer(dir);
  if (!st.registered) {
    await registerNamespace(st.address);
    st.registered = true;
    writeFileSync(statePath(dir), JSON.stringify(st, null, 2));
  }
  return st;
}

/** Stops the Temporal server and PostgreSQL; with `remove`, deletes the database too. */
export async function stopCluster(dirArg: string, remove = false): Promise<void> {
  const dir = resolve(dirArg);
  if (!existsSync(statePath(dir))) return;
  const st = readClusterState(dir);
  await stopTemporalServer(dir);
  const data = join(st.pgDir, 'data');
  if (existsSync(join(data, 'postmaster.pid'))) {
    try {
      runPg('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
    } catch {
      /* already stopped */
    }
  }
  if (remove) {
    rmSync(st.pgDir, { recursive: true, force: true });
    rmSync(statePath(dir), { force: true });
  }
}
