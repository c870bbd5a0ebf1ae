// The metrics seam: stages report through this interface and never create metrics themselves
// (src/metrics/prometheus-recorder.ts is the implementation; metrics.ts defines every dqserve_* metric).
import type { StageTiming } from '../engine/engine.js';
import type { ClassifyResult } from '../pipeline/model-pipeline.js';

/** Why a per-request Bit-FLOPs cap mattered: it lowered the controller's choice, or it was below the minimum (400). */
export type BudgetEvent = 'lowered' | 'below_minimum';

export interface InferenceRecorder {
  /** One image classified (success), with its cost and timing. */
  onResult(model: string, version: number, result: ClassifyResult): void;
  /** One request succeeded: all its images are classified (`onResult` came first for each). */
  onSuccess(model: string, version: number, results: readonly ClassifyResult[], durationMs: number): void;
  /** One request failed, by catalogue code. */
  onFailure(model: string, version: number, code: string, durationMs: number): void;
  /** One image left the batching queue: into a batch, timed out or cancelled. */
  onQueueWait(model: string, version: number, waitMs: number): void;
  /** One batch ran on the engine (Triton's "execution"). */
  onBatch(model: string, version: number, batchSize: number, timing: StageTiming): void;
  /** A per-request Bit-FLOPs cap lowered an image's bits, or refused a request. */
  onBudget(model: string, version: number, event: BudgetEvent): void;
  /** An engine worker thread exited while serving; a fresh one is being started. */
  onEngineRestart(model: string, version: number): void;
}

export const noopRecorder: InferenceRecorder = {
  onResult() {},
  onSuccess() {},
  onFailure() {},
  onQueueWait() {},
  onBatch() {},
  onBudget() {},
  onEngineRestart() {},
};
