// The trainer's up-front GPU memory check (trainer.ts assertFitsGpu): the engine's exact plan
// against 92% of the device, with the micro-batch that would fit in the message.
import { describe, expect, it } from "vitest";
import { assertFitsGpu } from "@gm/train";

const GiB = 2 ** 30;

describe("assertFitsGpu", () => {
  it("passes the reference plan (24l-512d bf16, L 2048 x 24: 1.11 + 36.56 GiB) on an 80 GB card, and an unknown device", () => {
    const mem = { params: 1.11 * GiB, activations: 36.56 * GiB };
    expect(() => assertFitsGpu(mem, 79.6, { micro: 24, length: 2048, ordinal: 0 })).not.toThrow();
    expect(() => assertFitsGpu(mem, undefined, { micro: 24, length: 2048, ordinal: 0 })).not.toThrow();
  });

  it("refuses what does not fit with one line naming the GPU and the micro-batch that fits", () => {
    const mem = { params: 1.11 * GiB, activations: 36.56 * GiB };
    let err: (Error & { exitCode?: number }) | undefined;
    try {
      assertFitsGpu(mem, 22, { micro: 24, length: 2048, ordinal: 1, name: "NVIDIA A10" });
    } catch (e) {
      err = e as Error & { exitCode?: number };
    }
    // (0.92 x 22 - 1.11) / 36.56 x 24 = 12.56 -> 12
    expect(err?.message).toBe("batch.micro_batch 24 x max_length 2048 needs 37.7 GiB on GPU 1 (NVIDIA A10), which has 22.0 GiB; use --micro-batch 12 or less (gradient accumulation keeps the global batch)");
    expect(err?.exitCode).toBe(2);
    expect(() => assertFitsGpu({ params: 30 * GiB, activations: 10 * GiB }, 24, { micro: 1, length: 2048, ordinal: 0 })).toThrow(/shorten data.max_length or use a smaller model$/);
  });
});
