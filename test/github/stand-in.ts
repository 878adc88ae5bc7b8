/**
 * A local stand-in for the parts of GitHub's REST API that Marina calls, following GitHub's documented
 * endpoints and answers (docs.github.com/en/rest: apps, actions/self-hosted-runners, actions/workflow-jobs,
 * actions/workflow-runs): App JWT (RS256, checked against the App's public key) → installation token →
 * generate-jitconfig, runners list/get/delete, job get, queued runs and their jobs, installation repositories.
 *
 * The runner side is the stand-in's own: how a real runner talks to the Actions service is not a public API.
 * A JIT config here has the real shape (base64 of a JSON map of file name to base64 content: `.runner`,
 * `.credentials`) and the runner stand-in (runner.py) claims one job with the credential in it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export interface StandInJob {
  id: number;
  runId: number;
  repository: string;
  name: string;
  labels: string[];
  status: 'queued' | 'in_progress' | 'completed';
  conclusion: string | null;
  steps: string[];
  runnerName: string | null;
  /** While true, no runner is handed this job (a test holds it queued). */
  hold?: boolean;
}

export interface StandInRunner {
  id: number;
  name: string;
  labels: string[];
  scope: string;
  busy: boolean;
  status: 'online' | 'offline';
  ephemeral: true;
  secret: string;
  groupId: number;
}

export interface StandInEvent {
  at: number;
  kind: 'jit' | 'delete' | 'online' | 'claim' | 'done' | 'token';
  runner?: string;
  job?: number;
}

export class GithubStandIn {
  readonly jobs = new Map<number, StandInJob>();
  readonly runners = new Map<number, StandInRunner>();
  readonly events: StandInEvent[] = [];
  /** Every registration made: where, under which name and runner group. */
  readonly registrations: Array<{ name: string; scope: string; groupId: number }> = [];
  /** Every JIT config and installation token handed out: tests search histories for them. */
  readonly issuedSecrets: string[] = [];
  /** Called when a generate-jitconfig request arrives, after the runner is registered, before the answer. */
  onGenerate: ((runner: StandInRunner) => Promise<void> | void) | undefined;
  private readonly tokens = new Map<string, number>();
  private nextRunnerId = 100;
  private server!: Server;
  url = '';
  private readonly appPublicKey: KeyObject;

  constructor(
    readonly appId: number,
    appPublicKeyPem: string,
    /** installation id → the accounts (orgs/users) and repositories it covers */
    readonly installations: Array<{ id: number; account: string; repositories: string[] }>,
  ) {
    this.appPublicKey = createPublicKey(appPublicKeyPem);
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => send(res, 500, { message: String(e) }));
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  addJob(job: Omit<StandInJob, 'status' | 'conclusion' | 'runnerName'>): StandInJob {
    const j: StandInJob = { ...job, status: 'queued', conclusion: null, runnerName: null };
    this.jobs.set(j.id, j);
    return j;
  }

  /** GitHub cancels a queued job (the workflow run was cancelled). */
  cancel(jobId: number): void {
    const j = this.jobs.get(jobId)!;
    j.status = 'completed';
    j.conclusion = 'cancelled';
  }

  runnersNamed(name: string): StandInRunner[] {
    return [...this.runners.values()].filter((r) => r.name === name);
  }

  count(kind: StandInEvent['kind'], runner?: string): number {
    return this.events.filter((e) => e.kind === kind && (runner === undefined || e.runner === runner)).length;
  }

  private checkJwt(req: IncomingMessage): boolean {
    const m = /^bearer ([^.]+)\.([^.]+)\.([^.]+)$/i.exec(String(req.headers.authorization ?? ''));
    if (!m) return false;
    const [, h, p, s] = m as unknown as [string, string, string, string];
    const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { alg?: string };
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as { iss?: unknown; exp?: number; iat?: number };
    if (header.alg !== 'RS256') return false;
    if (!verify('RSA-SHA256', Buffer.from(`${h}.${p}`), this.appPublicKey, Buffer.from(s, 'base64url'))) return false;
    const now = Date.now() / 1000;
    // GitHub: exp at most 10 minutes ahead, iss the App's id.
    return String(claims.iss) === String(this.appId) && (claims.exp ?? 0) > now && (claims.exp ?? 0) - now <= 660;
  }

  /** The installation an installation token belongs to, if the request carries a valid one. */
  private installationOf(req: IncomingMessage): number | undefined {
    const m = /^(?:token|bearer) (ghs_\w+)$/i.exec(String(req.headers.authorization ?? ''));
    return m ? this.tokens.get(m[1]!) : undefined;
  }

  private covers(installation: number, repository: string): boolean {
    const i = this.installations.find((x) => x.id === installation);
    return !!i && i.repositories.includes(repository);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const path = url.pathname;
    const body = await readJson(req);
    const method = req.method ?? 'GET';
    let m: RegExpExecArray | null;

    // --- the runner side (the stand-in's own protocol) ---
    if (method === 'POST' && (m = /^\/_runner\/(acquire|complete)$/.exec(path))) {
      const secret = String(req.headers.authorization ?? '').replace(/^Bearer /, '');
      const runner = [...this.runners.values()].find((r) => r.secret === secret);
      if (!runner) return send(res, 401, { message: 'runner not registered (deleted?)' });
      if (m[1] === 'acquire') {
        if (runner.status !== 'online') {
          runner.status = 'online';
          this.events.push({ at: Date.now(), kind: 'online', runner: runner.name });
        }
        const offered = new Set(runner.labels.map((l) => l.toLowerCase()));
        const job = [...this.jobs.values()].find(
          (j) =>
            j.status === 'queued' &&
            !j.hold &&
            this.inScope(runner.scope, j.repository) &&
            j.labels.every((l) => offered.has(l.toLowerCase())),
        );
        if (!job) return send(res, 204, undefined);
        job.status = 'in_progress';
        job.runnerName = runner.name;
        runner.busy = true;
        this.events.push({ at: Date.now(), kind: 'claim', runner: runner.name, job: job.id });
        return send(res, 200, { id: job.id, name: job.name, repository: job.repository, steps: job.steps });
      }
      const job = this.jobs.get(Number((body as { job?: unknown }).job));
      if (!job || job.runnerName !== runner.name) return send(res, 404, { message: 'not your job' });
      job.status = 'completed';
      job.conclusion = String((body as { conclusion?: unknown }).conclusion ?? 'success');
      // An ephemeral runner is removed once its job is done.
      this.runners.delete(runner.id);
      this.events.push({ at: Date.now(), kind: 'done', runner: runner.name, job: job.id });
      return send(res, 200, { ok: true });
    }

    // --- App authentication ---
    if (
      (m = /^\/repos\/([^/]+\/[^/]+)\/installation$/.exec(path)) ||
      (m = /^\/orgs\/([^/]+)\/installation$/.exec(path))
    ) {
      if (!this.checkJwt(req)) return send(res, 401, { message: 'A JSON web token could not be decoded' });
      const key = decodeURIComponent(m[1]!);
      const inst = this.installations.find((i) =>
        key.includes('/') ? i.repositories.includes(key) : i.account === key,
      );
      return inst
        ? send(res, 200, { id: inst.id, account: { login: inst.account } })
        : send(res, 404, { message: 'Not Found' });
    }
    if (method === 'POST' && (m = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(path))) {
      if (!this.checkJwt(req)) return send(res, 401, { message: 'A JSON web token could not be decoded' });
      const id = Number(m[1]);
      if (!this.installations.some((i) => i.id === id)) return send(res, 404, { message: 'Not Found' });
      const token = `ghs_${randomBytes(18).toString('hex')}`;
      this.tokens.set(token, id);
      this.issuedSecrets.push(token);
      this.events.push({ at: Date.now(), kind: 'token' });
      return send(res, 201, {
        token,
        expires_at: new Date(Date.now() + 3600_000).toISOString(),
        permissions: { administration: 'write', actions: 'read', organization_self_hosted_runners: 'write' },
        repository_selection: 'selected',
      });
    }

    // --- everything else needs an installation token ---
    const installation = this.installationOf(req);
    if (installation === undefined) return send(res, 401, { message: 'Bad credentials' });

    if (method === 'GET' && path === '/installation/repositories') {
      const repos = this.installations.find((i) => i.id === installation)!.repositories;
      return send(res, 200, {
        total_count: repos.length,
        repositories: repos.map((r) => ({ full_name: r, name: r.split('/')[1], owner: { login: r.split('/')[0] } })),
      });
    }

    // Runner endpoints, repository or organisation level.
    if ((m = /^\/(repos\/[^/]+\/[^/]+|orgs\/[^/]+)\/actions\/runners(?:\/(generate-jitconfig|\d+))?$/.exec(path))) {
      const scope = m[1]!.startsWith('repos/') ? `repo/${m[1]!.slice(6)}` : `org/${m[1]!.slice(5)}`;
      if (!this.scopeAllowed(installation, scope))
        return send(res, 403, { message: 'Resource not accessible by integration' });
      if (method === 'POST' && m[2] === 'generate-jitconfig') {
        const b = body as { name?: unknown; labels?: unknown; runner_group_id?: unknown; work_folder?: unknown };
        if (
          typeof b.name !== 'string' ||
          !Array.isArray(b.labels) ||
          b.labels.length < 1 ||
          typeof b.runner_group_id !== 'number'
        )
          return send(res, 422, {
            message: 'Validation Failed',
            errors: ['name, labels and runner_group_id are required'],
          });
        if ([...this.runners.values()].some((r) => r.scope === scope && r.name === b.name))
          return send(res, 409, { message: 'Already exists - A runner with the same name already exists.' });
        const runner: StandInRunner = {
          id: this.nextRunnerId++,
          name: b.name,
          labels: (b.labels as string[]).slice(),
          scope,
          busy: false,
          status: 'offline',
          ephemeral: true,
          secret: randomBytes(24).toString('hex'),
          groupId: b.runner_group_id,
        };
        this.runners.set(runner.id, runner);
        this.registrations.push({ name: runner.name, scope, groupId: runner.groupId });
        const file = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64');
        const encoded = Buffer.from(
          JSON.stringify({
            '.runner': file({
              AgentId: runner.id,
              AgentName: runner.name,
              PoolId: runner.groupId,
              ServerUrl: this.url,
              WorkFolder: b.work_folder ?? '_work',
              Ephemeral: true,
            }),
            '.credentials': file({ Scheme: 'OAuthAccessToken', Data: { token: runner.secret } }),
            '.credentials_rsaparams': file({ d: randomBytes(16).toString('base64') }),
          }),
        ).toString('base64');
        this.issuedSecrets.push(encoded, runner.secret);
        this.events.push({ at: Date.now(), kind: 'jit', runner: runner.name });
        await this.onGenerate?.(runner);
        return send(res, 201, { runner: publicRunner(runner), encoded_jit_config: encoded });
      }
      if (method === 'GET' && !m[2]) {
        const name = url.searchParams.get('name');
        const list = [...this.runners.values()].filter((r) => r.scope === scope && (!name || r.name === name));
        return send(res, 200, { total_count: list.length, runners: list.map(publicRunner) });
      }
      const runner = this.runners.get(Number(m[2]));
      if (!runner || runner.scope !== scope) return send(res, 404, { message: 'Not Found' });
      if (method === 'GET') return send(res, 200, publicRunner(runner));
      if (method === 'DELETE') {
        if (runner.busy)
          return send(res, 422, { message: 'Bad request - Runner "' + runner.name + '" is still running a job"' });
        this.runners.delete(runner.id);
        this.events.push({ at: Date.now(), kind: 'delete', runner: runner.name });
        return send(res, 204, undefined);
      }
    }

    if ((m = /^\/repos\/([^/]+\/[^/]+)\/actions\/(jobs\/(\d+)|runs|runs\/(\d+)\/jobs)$/.exec(path))) {
      const repository = m[1]!;
      if (!this.covers(installation, repository)) return send(res, 404, { message: 'Not Found' });
      const jobsOf = [...this.jobs.values()].filter((j) => j.repository === repository);
      if (m[3]) {
        const j = this.jobs.get(Number(m[3]));
        return j && j.repository === repository
          ? send(res, 200, publicJob(j))
          : send(res, 404, { message: 'Not Found' });
      }
      if (m[4]) {
        const list = jobsOf.filter((j) => j.runId === Number(m![4]));
        return send(res, 200, { total_count: list.length, jobs: list.map(publicJob) });
      }
      // A run is queued while any of its jobs is (the stand-in's runs are just their jobs' run ids).
      const status = url.searchParams.get('status');
      const runIds = [...new Set(jobsOf.filter((j) => !status || j.status === status).map((j) => j.runId))];
      return send(res, 200, {
        total_count: runIds.length,
        workflow_runs: runIds.map((id) => ({ id, status: status ?? 'queued', repository: { full_name: repository } })),
      });
    }
    return send(res, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
  }

  private inScope(scope: string, repository: string): boolean {
    return scope === `repo/${repository}` || scope === `org/${repository.split('/')[0]}`;
  }

  private scopeAllowed(installation: number, scope: string): boolean {
    const i = this.installations.find((x) => x.id === installation)!;
    return scope.startsWith('repo/') ? i.repositories.includes(scope.slice(5)) : i.account === scope.slice(4);
  }
}

function publicRunner(r: StandInRunner) {
  return {
    id: r.id,
    name: r.name,
    os: 'macOS',
    status: r.status,
    busy: r.busy,
    ephemeral: r.ephemeral,
    runner_group_id: r.groupId,
    labels: r.labels.map((name, id) => ({ id, name, type: 'custom' })),
  };
}

function publicJob(j: StandInJob) {
  return {
    id: j.id,
    run_id: j.runId,
    name: j.name,
    status: j.status,
    conclusion: j.conclusion,
    labels: j.labels,
    runner_name: j.runnerName,
    steps: j.steps.map((name, i) => ({ name, number: i + 1, status: j.status, conclusion: j.conclusion })),
  };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (body === undefined) {
    res.writeHead(status);
    res.end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      try {
        resolve(text ? JSON.parse(text) : {});
      } catch {
        resolve({});
      }
    });
  });
}
