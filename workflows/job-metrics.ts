/**
 * What each job adds to the metrics, recorded from the workflow through the SDK's meter: it skips
 * replays, so a job counts once however often its history is replayed. They come out of the worker's
 * Temporal endpoint (`telemetry.metrics.temporalPrometheus`) beside the SDK's own metrics.
 */
import { metricMeter } from '@temporalio/workflow';
import type { JobState, Stage } from './definitions';

const stageSeconds = () =>
  metricMeter.createHistogram(
    'marina_job_stage_seconds',
    'float',
    's',
    'Time of each job stage; stage=queue is the wait for a slot (the queue wait)',
  );
const finished = () => metricMeter.createCounter('marina_jobs_finished', '', 'Jobs ended, by pool and final state');

export function recordStage(pool: string, stage: Stage, ms: number): void {
  stageSeconds().record(ms / 1000, { pool, stage });
}

export function recordFinished(pool: string, state: JobState): void {
  finished().add(1, { pool, state });
}
