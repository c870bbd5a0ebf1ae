// The metrics seam (issue #4 fills it with prom-client, names dqserve_*): stages report through this
// interface and never create metrics themselves. Until then the recorder does nothing.
import type { ClassifyResult } from '../pipeline/model-pipeline.js';

export interface InferenceRecorder {
  /** One image classified (success), with its cost and timing. */
  onResult(model: string, version: number, result: ClassifyResult): void;
  /** One request failed, by catalogue code. */
  onFailure(model: string, version: number, code: string): void;
}

export const noopRecorder: InferenceRecorder = {
  onResult() {},
  onFailure() {},
};
