/**
 * The host workflow with the real 24 h constant on Temporal's time-skipping test server:
 * a host retired one hour after allocation is released exactly when AWS allows, a day
 * later in workflow time, in seconds of real time. The EC2 activities here are stand-ins
 * that enforce AWS's rule on the test server's clock (the emulator's clock cannot follow
 * skipped time); the real activities are tested against the emulator in host.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker, Runtime, DefaultLogger } from '@temporalio/worker';
import { MIN_ALLOCATION_SECONDS } from '../src/ec2mac/model';
import { releaseVerdict } from '../src/ec2mac/machine';
import { temporalTestServer } from '../src/tools/binaries';
import type { Activities } from '../activities/types';
import { hostStateQuery, retireHostSignal, type HostLife, type hostWorkflow } from '../workflows/host';
import { stack } from './helpers';
import { SEARCH_ATTRIBUTES } from '../workflows/definitions';

let env: TestWorkflowEnvironment;

beforeAll(async () => {
  try {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
  } catch {
    /* installed by another file in this process */
  }
  env = await TestWorkflowEnvironment.createTimeSkipping({
    server: { executable: { type: 'existing-path', path: temporalTestServer() } },
  });
  // The test server has no flag for custom search attributes; its operator service takes them.
  const KEYWORD = 2; // temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((k) => [k, KEYWORD])),
  });
});
afterAll(async () => {
  await env?.teardown();
});

describe('host workflow on the time-skipping server', () => {
  it('waits out the real 24 h minimum before release', async () => {
    const nowS = async () => (await env.currentTimeMs()) / 1000;
    let allocatedAt = 0;
    const releaseCalls: number[] = [];
    const activities: Partial<Activities> = {
      async allocateHost() {
        allocatedAt = await nowS();
        return { hostId: 'h-0123456789abcdef0', zone: 'us-east-1a', allocatedAt };
      },
      async waitHostAvailable() {
        return { hostId: 'h-0123456789abcdef0', state: 'available', allocatedAt };
      },
      async describeHost() {
        return { hostId: 'h-0123456789abcdef0', state: 'available', allocatedAt };
      },
      async launchInstance() {
        return 'i-0123456789abcdef0';
      },
      async waitInstanceReady() {
        return {
          instanceId: 'i-0123456789abcdef0',
          address: '10.0.0.7',
          port: 22,
          knownHostsLine: '10.0.0.7 ssh-ed25519 AAAA',
        };
      },
      async terminateInstance() {
        return 'terminated' as const;
      },
      async releaseHost() {
        const now = await nowS();
        releaseCalls.push(now);
        const v = releaseVerdict(
          { id: 'h-0123456789abcdef0', instanceType: 'mac2-m2.metal', allocatedAt, hasLiveInstance: false },
          now,
        );
        if (v.ok) return { released: true as const };
        const after = /any time after (\S+?Z)\./.exec(v.message);
        return { released: false as const, code: v.code, ...(after ? { retryAt: Date.parse(after[1]!) / 1000 } : {}) };
      },
    };
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue: 'timeskip',
      workflowBundle: { codePath: stack().bundlePath },
      activities,
    });
    const real0 = Date.now();
    const life = await worker.runUntil(async () => {
      const h = await env.client.workflow.start<typeof hostWorkflow>('hostWorkflow', {
        taskQueue: 'timeskip',
        workflowId: 'host/timeskip/1',
        args: [{ pool: 'timeskip', timeScale: 1, pollSeconds: 60 }],
      });
      await env.sleep(3600 * 1000); // an hour of service
      expect((await h.query(hostStateQuery)).phase).toBe('ready');
      await h.signal(retireHostSignal, { reason: 'idle' });
      return (await h.result()) as HostLife;
    });
    expect(life.phase).toBe('released');
    expect(releaseCalls).toHaveLength(2);
    // The first try, an hour in, is refused; the second comes right when AWS allows it.
    expect(releaseCalls[0]! - allocatedAt).toBeGreaterThan(3590);
    expect(releaseCalls[0]! - allocatedAt).toBeLessThan(3700);
    expect(releaseCalls[1]! - allocatedAt).toBeGreaterThanOrEqual(MIN_ALLOCATION_SECONDS);
    expect(releaseCalls[1]! - allocatedAt).toBeLessThan(MIN_ALLOCATION_SECONDS + 5);
    // A day of workflow time in seconds of real time.
    expect(Date.now() - real0).toBeLessThan(60_000);
  });
});
