/**
 * Learning-rate schedules. With s = step - 1 optimizer steps already taken and W warmup steps:
 *   s < W:  lr = peak * (s + 1) / W                       (linear warmup, reaching the peak at step W)
 *   else:   p = (s - W) / max(1, T - W), then
 *           linear:   min + (peak - min) * (1 - p)
 *           cosine:   min + (peak - min) * (1 + cos(pi p)) / 2
 *           constant: peak
 * For s >= W this equals the Hugging Face schedules (get_linear/cosine_schedule_with_warmup) with a
 * floor of min = minLrRatio * peak; HF's warmup starts at lr 0 (a wasted first step), ours at peak / W.
 * With W = 0 and linear decay it is exactly the reference run's schedule.
 */
export type ScheduleKind = "cosine" | "linear" | "constant";

export interface ScheduleOptions {
  kind: ScheduleKind;
  peakLr: number;
  warmupSteps: number;
  totalSteps: number;
  minLrRatio: number;
}

export function learningRate(step: number, o: ScheduleOptions): number {
  const s = step - 1;
  if (s < o.warmupSteps) return (o.peakLr * (s + 1)) / o.warmupSteps;
  if (o.kind === "constant") return o.peakLr;
  const p = Math.min(1, (s - o.warmupSteps) / Math.max(1, o.totalSteps - o.warmupSteps));
  const min = o.minLrRatio * o.peakLr;
  if (o.kind === "linear") return min + (o.peakLr - min) * (1 - p);
  return min + ((o.peakLr - min) * (1 + Math.cos(Math.PI * p))) / 2;
}
