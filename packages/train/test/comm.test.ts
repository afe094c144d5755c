import { describe, expect, it } from "vitest";
import { assertRunnable, createLocalRing, describeTopology, gpuLaunch, resolveTopology, type Communicator } from "@gm/train";

/** Deterministic pseudo-random floats in [-1, 1) (xorshift32). */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 31 - 1;
  };
}

const bits = (a: Float32Array | Float64Array) => (a instanceof Float32Array ? new Uint32Array(a.buffer, a.byteOffset, a.length) : new BigUint64Array(a.buffer, a.byteOffset, a.length));

/** Runs fn on every rank as concurrent async tasks; settles like Promise.allSettled. */
function onAll(comms: Communicator[], fn: (c: Communicator) => Promise<void>) {
  return Promise.allSettled(comms.map((c) => fn(c)));
}

describe("local ring all-reduce", () => {
  const sizes = [1, 2, 3, 4, 7];
  for (const R of sizes) {
    const lengths = [0, 1, R - 1, R, R + 1, 5 * R + 3, 1000, 4099].filter((n, i, a) => n >= 0 && a.indexOf(n) === i);
    for (const chunkElements of [1, 3, 64, 1 << 20]) {
      it(`R=${R}, chunkElements=${chunkElements}: mean within fp32 tolerance, bitwise identical on all ranks`, async () => {
        const comms = createLocalRing(R, { chunkElements, timeoutMs: 5000 });
        expect(comms.map((c) => [c.rank, c.worldSize, c.backend])).toEqual(comms.map((_, r) => [r, R, "local-ring"]));
        for (const n of lengths) {
          const rand = rng(1 + R * 1000 + n);
          const data = comms.map(() => Float32Array.from({ length: n }, () => rand() * 10));
          const expected = new Float64Array(n);
          for (const d of data) for (let i = 0; i < n; i++) expected[i] += d[i] / R;
          const res = await onAll(comms, (c) => c.allReduceMean(data[c.rank]));
          expect(res.every((x) => x.status === "fulfilled")).toBe(true);
          for (let i = 0; i < n; i++) {
            // |error| ≤ R fp32 roundings of the partial sums (magnitude ≤ 10 R) / R
            expect(Math.abs(data[0][i] - expected[i])).toBeLessThanOrEqual(R * 10 * 2 ** -23 + 1e-6);
          }
          for (let r = 1; r < R; r++) expect(bits(data[r])).toEqual(bits(data[0]));
        }
      });
    }
  }

  it("the mean of identical buffers is the buffer itself (exact halving for R = 2, 4)", async () => {
    for (const R of [2, 4]) {
      const comms = createLocalRing(R, { chunkElements: 5 });
      const src = Float32Array.from({ length: 37 }, (_, i) => (i - 18) * 0.37);
      const data = comms.map(() => src.slice());
      await Promise.all(comms.map((c) => c.allReduceMean(data[c.rank])));
      for (const d of data) expect(d).toEqual(src);
    }
  });

  it("allReduceSum is exact for integers and identical on all ranks", async () => {
    for (const R of [1, 2, 3, 7]) {
      const comms = createLocalRing(R, { chunkElements: 2 });
      const n = 11;
      const data = comms.map((c) => Float64Array.from({ length: n }, (_, i) => (c.rank + 1) * 1_000_003 * (i + 1) + 2 ** 40));
      const expected = Array.from({ length: n }, (_, i) => {
        let s = 0;
        for (let r = 0; r < R; r++) s += (r + 1) * 1_000_003 * (i + 1) + 2 ** 40;
        return s;
      });
      await Promise.all(comms.map((c) => c.allReduceSum(data[c.rank])));
      for (const d of data) expect(Array.from(d)).toEqual(expected);
    }
  });

  it("broadcast copies the root's data to every rank (float32 and float64, any root)", async () => {
    const R = 5;
    const comms = createLocalRing(R, { chunkElements: 3 });
    for (const root of [0, 2, 4]) {
      const f32 = comms.map((c) => Float32Array.from({ length: 17 }, (_, i) => c.rank * 100 + i + 0.5));
      await Promise.all(comms.map((c) => c.broadcast(f32[c.rank], root)));
      for (const d of f32) expect(bits(d)).toEqual(bits(Float32Array.from({ length: 17 }, (_, i) => root * 100 + i + 0.5)));
      const f64 = comms.map((c) => Float64Array.from({ length: 4 }, (_, i) => c.rank + i / 3));
      await Promise.all(comms.map((c) => c.broadcast(f64[c.rank], root)));
      for (const d of f64) expect(Array.from(d)).toEqual([0, 1, 2, 3].map((i) => root + i / 3));
    }
    // default root 0
    const d = comms.map((c) => new Float32Array([c.rank + 1]));
    await Promise.all(comms.map((c) => c.broadcast(d[c.rank])));
    expect(d.map((x) => x[0])).toEqual([1, 1, 1, 1, 1]);
  });

  it("barrier completes only when every rank has arrived", async () => {
    const comms = createLocalRing(3);
    const done: number[] = [];
    const p0 = comms[0].barrier().then(() => done.push(0));
    const p1 = comms[1].barrier().then(() => done.push(1));
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toEqual([]);
    const p2 = comms[2].barrier().then(() => done.push(2));
    await Promise.all([p0, p1, p2]);
    expect(done.sort()).toEqual([0, 1, 2]);
  });

  it("collectives match by call order, across many iterations like a training loop", async () => {
    const R = 4;
    const comms = createLocalRing(R, { chunkElements: 7 });
    const grads = comms.map(() => new Float32Array(50));
    await Promise.all(
      comms.map(async (c) => {
        for (let step = 0; step < 20; step++) {
          grads[c.rank].fill(c.rank + step);
          // a little asynchrony between ranks
          if ((c.rank + step) % 3 === 0) await new Promise((r) => setTimeout(r, 1));
          await c.allReduceMean(grads[c.rank]);
          const stats = new Float64Array([c.rank, 1]);
          await c.allReduceSum(stats);
          expect(Array.from(stats)).toEqual([6, 4]);
          expect(grads[c.rank][49]).toBe(1.5 + step);
        }
        await c.barrier();
      }),
    );
  });

  it("mismatched lengths reject on every rank with a clear error", async () => {
    const comms = createLocalRing(3, { timeoutMs: 2000 });
    const res = await onAll(comms, (c) => c.allReduceMean(new Float32Array(c.rank === 1 ? 9 : 10)));
    for (const r of res) {
      expect(r.status).toBe("rejected");
      expect(String((r as PromiseRejectedResult).reason.message)).toMatch(/length mismatch.*rank 0 has 10, rank 1 has 9, rank 2 has 10/);
    }
    // the group is still usable afterwards
    const ok = await onAll(comms, (c) => c.allReduceMean(new Float32Array(4)));
    expect(ok.every((x) => x.status === "fulfilled")).toBe(true);
  });

  it("mismatched op kinds, element types and roots reject on every rank", async () => {
    const comms = createLocalRing(2, { timeoutMs: 2000 });
    let res = await onAll(comms, (c) => (c.rank === 0 ? c.allReduceMean(new Float32Array(3)) : c.barrier()));
    for (const r of res) expect((r as PromiseRejectedResult).reason.message).toMatch(/collective mismatch.*rank 0 called allReduceMean, rank 1 called barrier/);
    res = await onAll(comms, (c) => c.broadcast(c.rank === 0 ? new Float32Array(3) : new Float64Array(3)));
    for (const r of res) expect((r as PromiseRejectedResult).reason.message).toMatch(/element type mismatch/);
    res = await onAll(comms, (c) => c.broadcast(new Float32Array(3), c.rank));
    for (const r of res) expect((r as PromiseRejectedResult).reason.message).toMatch(/root mismatch/);
    res = await onAll(comms, (c) => c.allReduceMean((c.rank === 1 ? new Float64Array(3) : new Float32Array(3)) as Float32Array));
    for (const r of res) expect((r as PromiseRejectedResult).reason.message).toMatch(/rank 1: allReduceMean needs a Float32Array \(got Float64Array\)/);
    res = await onAll(comms, (c) => c.broadcast(new Float32Array(3), 5));
    for (const r of res) expect((r as PromiseRejectedResult).reason.message).toMatch(/root must be an integer rank in 0\.\.1/);
    const shared = new Float32Array(8);
    res = await onAll(comms, (c) => c.allReduceMean(shared));
    for (const r of res) expect((r as PromiseRejectedResult).reason.message).toMatch(/overlapping buffers/);
  });

  it("R = 1 is a no-op that still validates", async () => {
    const [c] = createLocalRing(1);
    const d = new Float32Array([1.5, -2]);
    await c.allReduceMean(d);
    expect(Array.from(d)).toEqual([1.5, -2]);
    await c.allReduceSum(new Float64Array([3]));
    await c.broadcast(d, 0);
    await c.barrier();
    await expect(c.allReduceMean(new Float64Array(2) as unknown as Float32Array)).rejects.toThrow(/needs a Float32Array/);
    await expect(c.broadcast(d, 1)).rejects.toThrow(/root must be/);
    c.close();
    await expect(c.barrier()).rejects.toThrow(/closed communicator/);
  });

  it("a rank that never arrives times out, naming the missing rank", async () => {
    const comms = createLocalRing(4, { timeoutMs: 50 });
    const t0 = Date.now();
    const res = await Promise.allSettled([0, 1, 3].map((r) => comms[r].allReduceMean(new Float32Array(10))));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(40);
    for (const r of res) {
      expect(r.status).toBe("rejected");
      expect((r as PromiseRejectedResult).reason.name).toBe("CommError");
      expect((r as PromiseRejectedResult).reason.message).toMatch(/allReduceMean \(call #0\) timed out after 50 ms waiting for rank 2 \(ranks 0, 1, 3 arrived\)/);
    }
    // the late rank, and later calls, fail fast instead of hanging
    await expect(comms[2].allReduceMean(new Float32Array(10))).rejects.toThrow(/aborted.*waiting for rank 2/);
    await expect(comms[0].barrier()).rejects.toThrow(/aborted/);
  });

  it("closing a rank fails the collectives waiting for it", async () => {
    const comms = createLocalRing(3, { timeoutMs: 5000 });
    const p = Promise.allSettled([comms[0].barrier(), comms[1].barrier()]);
    comms[2].close();
    const res = await p;
    for (const r of res) expect((r as PromiseRejectedResult).reason.message).toMatch(/rank 2 closed the communicator/);
  });

  it("rejects bad group options", () => {
    expect(() => createLocalRing(0)).toThrow(/worldSize/);
    expect(() => createLocalRing(2, { chunkElements: 0 })).toThrow(/chunkElements/);
    expect(() => createLocalRing(2, { timeoutMs: -1 })).toThrow(/timeoutMs/);
  });
});

describe("topology", () => {
  const none = {} as NodeJS.ProcessEnv;

  it("defaults to one CPU rank in this process", () => {
    const t = resolveTopology({}, none);
    expect(t).toEqual({
      worldSize: 1,
      nnodes: 1,
      nodeRank: 0,
      ranksPerNode: 1,
      localRanks: [0],
      localIndex: 0,
      masterAddr: "127.0.0.1",
      masterPort: 29500,
      device: "cpu",
      launcher: "gm",
      multiProcess: false,
    });
    expect(() => assertRunnable(t)).not.toThrow();
    expect(describeTopology(t)).toMatch(/1 cpu rank/);
  });

  it("--ranks N runs N CPU ranks in this process", () => {
    const t = resolveTopology({ ranks: 4 }, none);
    expect(t).toMatchObject({ worldSize: 4, ranksPerNode: 4, localRanks: [0, 1, 2, 3], multiProcess: false, device: "cpu" });
    expect(() => assertRunnable(t)).not.toThrow();
    expect(describeTopology(t)).toBe("data parallel: 4 ranks = 1 node × 4 cpu ranks, in this process (launcher gm)");
  });

  it("multi-node flags describe a multi-process CPU world that assertRunnable accepts (TCP ring)", () => {
    const t = resolveTopology({ ranks: 2, nnodes: 3, nodeRank: 1, masterAddr: "10.0.0.1", masterPort: 1234 }, none);
    expect(t).toMatchObject({ worldSize: 6, nnodes: 3, nodeRank: 1, localRanks: [2, 3], masterAddr: "10.0.0.1", masterPort: 1234, multiProcess: true });
    expect(describeTopology(t)).toMatch(/6 ranks = 3 nodes × 2 cpu ranks, 3 processes, this one \(node 1\) hosts ranks 2-3; master 10\.0\.0\.1:1234/);
    expect(() => assertRunnable(t)).not.toThrow();
    // GPUs across nodes: refused without a CUDA backend, one clear line, exit 2
    const g = resolveTopology({ gpus: 2, nnodes: 2, nodeRank: 0, masterAddr: "10.0.0.1" }, none);
    expect(() => assertRunnable(g, { count: 0, reason: "no CUDA toolkit" })).toThrow("--gpus 2 needs the CUDA backend, which this build lacks (no CUDA toolkit); on CPU run the ranks with --ranks 2");
    try {
      assertRunnable(g);
    } catch (e) {
      expect((e as { exitCode: number }).exitCode).toBe(2);
    }
    expect(() => assertRunnable(g, { backend: "cuda", count: 4 })).not.toThrow();
    expect(() => assertRunnable(g, { backend: "cuda", count: 1 })).toThrow("--gpus 2 but this node has 1 visible GPU; use --gpus 1");
    expect(() => assertRunnable(g, { backend: "cuda", count: 0 })).toThrow(/this process sees no GPU/);
  });

  it("--gpus N on gm's own launch starts one torchrun-style worker per GPU; under torchrun the process is the rank on GPU LOCAL_RANK", () => {
    const t = resolveTopology({ gpus: 2, nnodes: 2, nodeRank: 1, masterAddr: "10.0.0.1", masterPort: 1234 }, none);
    expect(t).toMatchObject({ device: "cuda", worldSize: 4, localRanks: [2, 3], multiProcess: true });
    const plan = gpuLaunch(t);
    expect(plan).toEqual({
      spawn: true,
      workers: [
        { rank: 2, localRank: 0, env: { RANK: "2", WORLD_SIZE: "4", LOCAL_RANK: "0", LOCAL_WORLD_SIZE: "2", GROUP_RANK: "1", MASTER_ADDR: "10.0.0.1", MASTER_PORT: "1234" } },
        { rank: 3, localRank: 1, env: { RANK: "3", WORLD_SIZE: "4", LOCAL_RANK: "1", LOCAL_WORLD_SIZE: "2", GROUP_RANK: "1", MASTER_ADDR: "10.0.0.1", MASTER_PORT: "1234" } },
      ],
    });
    // each worker, resolving its own env with the same flags, is one rank on its GPU
    for (const w of (plan as { workers: { rank: number; localRank: number; env: Record<string, string> }[] }).workers) {
      const wt = resolveTopology({ gpus: 2, nnodes: 2, nodeRank: 1, masterAddr: "10.0.0.1", masterPort: 1234 }, w.env);
      expect(wt).toMatchObject({ launcher: "torchrun", worldSize: 4, localRanks: [w.rank], localIndex: w.localRank, device: "cuda", multiProcess: true });
      expect(gpuLaunch(wt)).toEqual({ spawn: false, ordinal: w.localRank });
      expect(() => assertRunnable(wt, { backend: "cuda", count: 2 })).not.toThrow();
      if (w.localRank === 1) expect(() => assertRunnable(wt, { backend: "cuda", count: 1 })).toThrow(/local index is 1 but the process sees 1 GPU/);
    }
    expect(gpuLaunch(resolveTopology({ gpus: 1 }, none))).toEqual({ spawn: false, ordinal: 0 });
  });

  it("reads torchrun's environment: one rank per process", () => {
    const env = { RANK: "5", WORLD_SIZE: "8", LOCAL_RANK: "1", LOCAL_WORLD_SIZE: "4", MASTER_ADDR: "node0", MASTER_PORT: "29400" };
    const t = resolveTopology({}, env);
    expect(t).toEqual({
      worldSize: 8,
      nnodes: 2,
      nodeRank: 1,
      ranksPerNode: 4,
      localRanks: [5],
      localIndex: 1,
      masterAddr: "node0",
      masterPort: 29400,
      device: "cpu",
      launcher: "torchrun",
      multiProcess: true,
    });
    expect(() => assertRunnable(t)).not.toThrow();
    // flags agreeing with the env are fine; address/port flags take precedence
    expect(resolveTopology({ nnodes: 2, nodeRank: 1, ranks: 1, masterPort: 4000, masterAddr: "x" }, env)).toMatchObject({ masterPort: 4000, masterAddr: "x" });
    // a single-process torchrun world
    expect(resolveTopology({}, { RANK: "0", WORLD_SIZE: "1" })).toMatchObject({ worldSize: 1, localRanks: [0], multiProcess: false, launcher: "torchrun" });
  });

  it("torchrun env wins over Slurm env", () => {
    const env = { RANK: "1", WORLD_SIZE: "2", LOCAL_WORLD_SIZE: "2", SLURM_NTASKS: "4", SLURM_PROCID: "3", SLURM_NNODES: "1" };
    expect(resolveTopology({}, env)).toMatchObject({ launcher: "torchrun", worldSize: 2, localRanks: [1] });
    expect(resolveTopology({ launcher: "gm", ranks: 3 }, env)).toMatchObject({ launcher: "gm", worldSize: 3 });
  });

  it("flags contradicting torchrun's env are errors", () => {
    const env = { RANK: "0", WORLD_SIZE: "8", LOCAL_WORLD_SIZE: "8", MASTER_ADDR: "h" };
    expect(() => resolveTopology({ nnodes: 2 }, env)).toThrow(/--nnodes 2 contradicts the torchrun environment \(WORLD_SIZE=8 \/ LOCAL_WORLD_SIZE=8 = 1 node\)/);
    expect(() => resolveTopology({ nodeRank: 1 }, env)).toThrow(/--node-rank 1 contradicts/);
    expect(() => resolveTopology({ ranks: 4 }, env)).toThrow(/--ranks 4 contradicts the torchrun environment: a process launched by torchrun hosts exactly one rank/);
    expect(() => resolveTopology({ gpus: 4 }, env)).toThrow(/--gpus 4 contradicts/);
    expect(() => resolveTopology({}, { RANK: "8", WORLD_SIZE: "8" })).toThrow("RANK=8 must be less than WORLD_SIZE=8");
    expect(() => resolveTopology({}, { RANK: "0" })).toThrow(/RANK and WORLD_SIZE must both be set/);
    expect(() => resolveTopology({}, { RANK: "x", WORLD_SIZE: "2" })).toThrow(/RANK=x in the environment must be a non-negative integer/);
    expect(() => resolveTopology({}, { RANK: "0", WORLD_SIZE: "6", LOCAL_WORLD_SIZE: "4" })).toThrow(/WORLD_SIZE=6 is not a multiple of LOCAL_WORLD_SIZE=4/);
    expect(() => resolveTopology({}, { RANK: "0", WORLD_SIZE: "8", LOCAL_WORLD_SIZE: "4" })).toThrow(/master address is required/);
    expect(() => resolveTopology({}, { RANK: "0", WORLD_SIZE: "2", MASTER_PORT: "70000" })).toThrow(/MASTER_PORT=70000 .* 1\.\.65535/);
  });

  it("reads Slurm's environment when SLURM_NTASKS > 1", () => {
    const env = {
      SLURM_NTASKS: "8",
      SLURM_PROCID: "6",
      SLURM_LOCALID: "2",
      SLURM_NNODES: "2",
      SLURM_NODEID: "1",
      SLURM_NTASKS_PER_NODE: "4",
      SLURM_JOB_NODELIST: "gpu[07-08]",
    };
    const t = resolveTopology({}, env);
    expect(t).toEqual({
      worldSize: 8,
      nnodes: 2,
      nodeRank: 1,
      ranksPerNode: 4,
      localRanks: [6],
      localIndex: 2,
      masterAddr: "gpu07",
      masterPort: 29500,
      device: "cpu",
      launcher: "slurm",
      multiProcess: true,
    });
    expect(resolveTopology({}, { ...env, MASTER_ADDR: "login1" }).masterAddr).toBe("login1");
    expect(resolveTopology({}, { ...env, SLURM_JOB_NODELIST: "alpha,beta" }).masterAddr).toBe("alpha");
    expect(resolveTopology({}, { ...env, SLURM_JOB_NODELIST: "n[3,5-7],m1" }).masterAddr).toBe("n3");
    const { SLURM_NTASKS_PER_NODE: _, ...noPerNode } = env;
    expect(resolveTopology({}, { ...noPerNode, SLURM_TASKS_PER_NODE: "4(x2)" }).ranksPerNode).toBe(4);
    expect(resolveTopology({}, noPerNode).ranksPerNode).toBe(4);
    expect(() => resolveTopology({}, { ...noPerNode, SLURM_TASKS_PER_NODE: "5,3" })).toThrow(/same number of ranks/);
    expect(() => resolveTopology({ nnodes: 4 }, env)).toThrow(/--nnodes 4 contradicts the Slurm environment \(SLURM_NNODES=2\)/);
    expect(() => resolveTopology({}, { ...env, SLURM_PROCID: "8" })).toThrow("SLURM_PROCID=8 must be less than SLURM_NTASKS=8");
    expect(() => resolveTopology({}, { ...env, SLURM_NNODES: "3" })).toThrow(/SLURM_NTASKS=8 does not equal SLURM_NNODES=3/);
    const { SLURM_JOB_NODELIST: __, ...noList } = env;
    expect(() => resolveTopology({}, noList)).toThrow(/master address is required/);
  });

  it("ignores a single-task Slurm allocation unless asked", () => {
    const env = { SLURM_NTASKS: "1", SLURM_PROCID: "0", SLURM_NNODES: "1", SLURM_JOB_NODELIST: "n1" };
    expect(resolveTopology({ ranks: 4 }, env)).toMatchObject({ launcher: "gm", worldSize: 4 });
    expect(resolveTopology({ launcher: "slurm" }, env)).toMatchObject({ launcher: "slurm", worldSize: 1, localRanks: [0], masterAddr: "n1" });
    expect(() => resolveTopology({ launcher: "slurm" }, none)).toThrow(/SLURM_NTASKS is missing/);
    expect(() => resolveTopology({ launcher: "torchrun" }, none)).toThrow(/RANK and WORLD_SIZE must both be set/);
  });

  it("validates flags with one clear line each", () => {
    const cases: [Parameters<typeof resolveTopology>[0], RegExp][] = [
      [{ ranks: 0 }, /^--ranks must be a positive integer \(got 0\)$/],
      [{ ranks: 1.5 }, /^--ranks must be a positive integer/],
      [{ gpus: -1 }, /^--gpus must be a positive integer/],
      [{ nnodes: 0 }, /^--nnodes must be a positive integer/],
      [{ nodeRank: -1 }, /^--node-rank must be a non-negative integer/],
      [{ nnodes: 2, nodeRank: 2, masterAddr: "h" }, /^--node-rank 2 must be less than --nnodes 2$/],
      [{ masterPort: 0 }, /^--master-port must be a port number in 1\.\.65535 \(got 0\)$/],
      [{ masterPort: 65536 }, /^--master-port must be a port number in 1\.\.65535/],
      [{ masterAddr: " " }, /^--master-addr must not be empty$/],
      [{ nnodes: 2 }, /^--master-addr is required with --nnodes 2/],
      [{ ranks: 2, gpus: 2 }, /^--ranks and --gpus cannot be combined/],
    ];
    for (const [flags, re] of cases) {
      let err: unknown;
      try {
        resolveTopology(flags, none);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(flags)).toBeInstanceOf(Error);
      expect((err as Error).name).toBe("GmError");
      expect((err as { exitCode: number }).exitCode).toBe(2);
      expect((err as Error).message).toMatch(re);
      expect((err as Error).message).not.toContain("\n");
    }
    // MASTER_ADDR from the environment satisfies a multi-node gm launch
    expect(resolveTopology({ nnodes: 2 }, { MASTER_ADDR: "h0" })).toMatchObject({ masterAddr: "h0", worldSize: 2, localRanks: [0] });
  });
});
