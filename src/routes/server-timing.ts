// The Server-Timing header for one classified image (durations in ms).
import type { Timing } from '../pipeline/model-pipeline.js';

export function serverTiming(t: Timing): string {
  const f = (x: number) => x.toFixed(3);
  return `queue;dur=${f(t.queueMs)}, preprocess;dur=${f(t.preprocessMs)}, controller;dur=${f(t.controllerMs)}, layers;dur=${f(t.layersMs)}, total;dur=${f(t.totalMs)}`;
}
