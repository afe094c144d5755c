import { CommError, type Communicator } from "./communicator.js";

/**
 * In-process ring all-reduce for R data-parallel CPU ranks that live in one process and one JS
 * thread (each rank is an async task; the group is driven with `Promise.all`).
 *
 * Matching: each rank numbers its collective calls 0, 1, 2, ...; call #k of every rank forms one
 * collective. When the last rank arrives, the whole collective runs synchronously (the ranks share
 * the thread, so there is nothing to overlap) and every rank's promise settles.
 *
 * The ring (as NCCL's ring algorithm): the buffer is split into R contiguous segments.
 *  - reduce-scatter, R−1 steps: at step s rank r sends segment (r − s) mod R to rank (r + 1) mod R,
 *    which adds it (float32 adds for allReduceMean, as NCCL does) into its own copy. After the last
 *    step rank r holds the complete sum of segment (r + 1) mod R.
 *  - the owner divides its segment by R (mean); doing it before the gather instead of after is the
 *    same bits on every rank, with 1/R of the work.
 *  - all-gather, R−1 steps: at step s rank r sends segment (r + 1 − s) mod R to rank (r + 1) mod R,
 *    which copies it.
 * Messages are emulated by per-rank staging ("send") buffers: at each step every rank first copies
 * what it sends into its staging buffer, then every receiver consumes its left neighbour's staging
 * buffer. Segments are pipelined in chunks of `chunkElements`, so staging memory stays at
 * R × min(chunkElements, segment length) elements whatever the buffer size.
 *
 * Why the result is bitwise identical on all ranks: each segment is summed by exactly one chain of
 * adds (starting at rank k for segment k: d_k + d_{k+1} + ... + d_{k−1}) and scaled once, by its
 * owner; every other rank receives a bit-exact copy of that result (same-type TypedArray copies).
 * The summation order depends on R and on the segment, so a result matches a single-rank (or a
 * float64) sum only within fp32 rounding, not bitwise.
 */
export function createLocalRing(worldSize: number, opts: { chunkElements?: number; timeoutMs?: number } = {}): Communicator[] {
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`local-ring: worldSize must be a positive integer (got ${worldSize})`);
  const chunk = opts.chunkElements ?? 1 << 20;
  if (!Number.isInteger(chunk) || chunk < 1) throw new RangeError(`local-ring: chunkElements must be a positive integer (got ${chunk})`);
  const timeoutMs = opts.timeoutMs ?? 10 * 60 * 1000;
  if (!(timeoutMs > 0)) throw new RangeError(`local-ring: timeoutMs must be positive or Infinity (got ${timeoutMs})`);
  const group = new RingGroup(worldSize, chunk, timeoutMs);
  return Array.from({ length: worldSize }, (_, r) => new LocalRingCommunicator(group, r));
}

type Buf = Float32Array | Float64Array;
type OpKind = "allReduceMean" | "allReduceSum" | "broadcast" | "barrier";

interface Arrival {
  kind: OpKind;
  data?: Buf;
  root?: number;
  /** A problem with this rank's own arguments; reported to all ranks once everyone has arrived. */
  problem?: string;
  resolve: () => void;
  reject: (e: Error) => void;
}

interface Pending {
  seq: number;
  arrivals: (Arrival | undefined)[];
  count: number;
  timer?: NodeJS.Timeout;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

class LocalRingCommunicator implements Communicator {
  readonly backend = "local-ring";
  readonly worldSize: number;
  constructor(
    private readonly group: RingGroup,
    readonly rank: number,
  ) {
    this.worldSize = group.size;
  }
  allReduceMean(data: Float32Array): Promise<void> {
    return this.group.arrive(this.rank, "allReduceMean", data);
  }
  allReduceSum(data: Float64Array): Promise<void> {
    return this.group.arrive(this.rank, "allReduceSum", data);
  }
  broadcast(data: Float32Array | Float64Array, root = 0): Promise<void> {
    return this.group.arrive(this.rank, "broadcast", data, root);
  }
  barrier(): Promise<void> {
    return this.group.arrive(this.rank, "barrier");
  }
  close(): void {
    this.group.close(this.rank);
  }
}

const typeName = (x: unknown): string =>
  x === null ? "null" : typeof x === "object" ? ((x as object).constructor?.name ?? "object") : typeof x;

const plural = (n: number, word: string) => `${word}${n === 1 ? "" : "s"}`;
const listRanks = (rs: number[]) => `${plural(rs.length, "rank")} ${rs.join(", ")}`;

class RingGroup {
  private readonly next: number[];
  private readonly closed: boolean[];
  private readonly pending = new Map<number, Pending>();
  private aborted: string | undefined;
  private staging32: Float32Array[] = [];
  private staging64: Float64Array[] = [];

  constructor(
    readonly size: number,
    readonly chunk: number,
    readonly timeoutMs: number,
  ) {
    this.next = new Array<number>(size).fill(0);
    this.closed = new Array<boolean>(size).fill(false);
  }

  arrive(rank: number, kind: OpKind, data?: unknown, root?: unknown): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.closed[rank]) return reject(new CommError(`local-ring rank ${rank}: ${kind} on a closed communicator`));
      if (this.aborted !== undefined) return reject(new CommError(`local-ring rank ${rank}: ${kind} on an aborted communicator (${this.aborted})`));
      const seq = this.next[rank];
      // A closed rank that never reached call #seq never will.
      const gone = this.closed.flatMap((c, r) => (c && this.next[r] <= seq ? [r] : []));
      if (gone.length) return reject(new CommError(`local-ring rank ${rank}: ${kind} (call #${seq}) cannot complete: ${listRanks(gone)} closed the communicator`));
      this.next[rank]++;
      const arrival: Arrival = { kind, data: data as Buf | undefined, root: root as number | undefined, resolve, reject };
      arrival.problem = this.checkArgs(kind, data, root);

      if (this.size === 1) {
        // Fast path: the mean, sum and broadcast of one rank are its own data.
        if (arrival.problem) reject(new CommError(`local-ring ${kind} (call #${seq}): rank 0: ${arrival.problem}`));
        else resolve();
        return;
      }

      let p = this.pending.get(seq);
      if (!p) {
        p = { seq, arrivals: new Array<Arrival | undefined>(this.size).fill(undefined), count: 0 };
        this.pending.set(seq, p);
        if (Number.isFinite(this.timeoutMs)) {
          const pp = p;
          p.timer = setTimeout(() => this.timeout(pp), Math.min(this.timeoutMs, MAX_TIMER_MS));
        }
      }
      p.arrivals[rank] = arrival;
      p.count++;
      if (p.count === this.size) this.complete(p);
    });
  }

  close(rank: number): void {
    if (this.closed[rank]) return;
    this.closed[rank] = true;
    // Collectives this rank will now never join can never complete: fail them everywhere.
    const waiting = [...this.pending.values()].filter((p) => !p.arrivals[rank]);
    if (waiting.length) {
      const p = waiting[0];
      const kind = p.arrivals.find((a) => a)!.kind;
      this.abort(`rank ${rank} closed the communicator while ${listRanks(this.arrivedRanks(p))} waited in ${kind} (call #${p.seq})`);
    }
  }

  private checkArgs(kind: OpKind, data: unknown, root: unknown): string | undefined {
    if (kind === "allReduceMean" && !(data instanceof Float32Array)) return `allReduceMean needs a Float32Array (got ${typeName(data)})`;
    if (kind === "allReduceSum" && !(data instanceof Float64Array)) return `allReduceSum needs a Float64Array (got ${typeName(data)})`;
    if (kind === "broadcast") {
      if (!(data instanceof Float32Array || data instanceof Float64Array)) return `broadcast needs a Float32Array or Float64Array (got ${typeName(data)})`;
      if (typeof root !== "number" || !Number.isInteger(root) || root < 0 || root >= this.size)
        return `broadcast root must be an integer rank in 0..${this.size - 1} (got ${String(root)})`;
    }
    return undefined;
  }

  private arrivedRanks(p: Pending): number[] {
    return p.arrivals.flatMap((a, r) => (a ? [r] : []));
  }

  private timeout(p: Pending): void {
    if (this.pending.get(p.seq) !== p) return;
    const arrived = this.arrivedRanks(p);
    const missing = p.arrivals.flatMap((a, r) => (a ? [] : [r]));
    const kind = p.arrivals[arrived[0]]!.kind;
    this.abort(
      `${kind} (call #${p.seq}) timed out after ${this.timeoutMs} ms waiting for ${listRanks(missing)} ` +
        `(${listRanks(arrived)} arrived); a rank that stopped or skipped a collective`,
    );
  }

  /** The group can no longer make progress: reject everything pending, and every later call. */
  private abort(reason: string): void {
    this.aborted = reason;
    const all = [...this.pending.values()].sort((a, b) => a.seq - b.seq);
    this.pending.clear();
    for (const p of all) {
      if (p.timer) clearTimeout(p.timer);
      for (const a of p.arrivals) a?.reject(new CommError(`local-ring: ${reason}`));
    }
  }

  private complete(p: Pending): void {
    this.pending.delete(p.seq);
    if (p.timer) clearTimeout(p.timer);
    const arrivals = p.arrivals as Arrival[];
    let error: string | undefined;
    try {
      error = this.validate(p.seq, arrivals);
      if (!error) this.execute(arrivals);
    } catch (e) {
      error = `${arrivals[0].kind} (call #${p.seq}) failed: ${(e as Error).message}`;
    }
    if (error) for (const a of arrivals) a.reject(new CommError(`local-ring: ${error}`));
    else for (const a of arrivals) a.resolve();
  }

  /** One message for all ranks, or undefined when the collective is consistent. */
  private validate(seq: number, as: Arrival[]): string | undefined {
    const kinds = new Set(as.map((a) => a.kind));
    if (kinds.size > 1)
      return `collective mismatch at call #${seq}: ${as.map((a, r) => `rank ${r} called ${a.kind}`).join(", ")}; every rank must issue the same collectives in the same order`;
    const kind = as[0].kind;
    const problems = as.flatMap((a, r) => (a.problem ? [`rank ${r}: ${a.problem}`] : []));
    if (problems.length) return `${kind} (call #${seq}): ${problems.join("; ")}`;
    if (kind === "barrier") return undefined;
    const bufs = as.map((a) => a.data!);
    const types = new Set(bufs.map((b) => b.constructor.name));
    if (types.size > 1) return `${kind} element type mismatch at call #${seq}: ${bufs.map((b, r) => `rank ${r} ${b.constructor.name}`).join(", ")}`;
    const lens = new Set(bufs.map((b) => b.length));
    if (lens.size > 1)
      return `${kind} length mismatch at call #${seq}: ${bufs.map((b, r) => `rank ${r} has ${b.length}`).join(", ")} elements; every rank must pass a buffer of the same length`;
    if (kind === "broadcast") {
      const roots = new Set(as.map((a) => a.root));
      if (roots.size > 1) return `broadcast root mismatch at call #${seq}: ${as.map((a, r) => `rank ${r} root ${a.root}`).join(", ")}`;
    }
    // The ring reads a rank's buffer while writing its neighbour's: the buffers must be distinct memory.
    for (let i = 0; i < bufs.length; i++) {
      for (let j = i + 1; j < bufs.length; j++) {
        const a = bufs[i];
        const b = bufs[j];
        if (a.byteLength > 0 && a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength)
          return `${kind} (call #${seq}): ranks ${i} and ${j} passed overlapping buffers; each rank needs its own memory`;
      }
    }
    return undefined;
  }

  private execute(as: Arrival[]): void {
    const kind = as[0].kind;
    if (kind === "barrier") return;
    const bufs = as.map((a) => a.data!);
    if (bufs[0].length === 0) return;
    if (kind === "broadcast") return this.chainBroadcast(bufs, as[0].root!);
    this.ringAllReduce(bufs, kind === "allReduceMean");
  }

  private stagingFor(bufs: Buf[], need: number): Buf[] {
    if (bufs[0] instanceof Float32Array) {
      if (!this.staging32.length || this.staging32[0].length < need)
        this.staging32 = Array.from({ length: this.size }, () => new Float32Array(need));
      return this.staging32;
    }
    if (!this.staging64.length || this.staging64[0].length < need) this.staging64 = Array.from({ length: this.size }, () => new Float64Array(need));
    return this.staging64;
  }

  private ringAllReduce(bufs: Buf[], mean: boolean): void {
    const R = this.size;
    const n = bufs[0].length;
    // Segment k is [start(k), start(k + 1)); lengths differ by at most one, empty when n < R.
    const start = (k: number) => Math.floor((k * n) / R);
    const maxSeg = Math.ceil(n / R);
    const chunk = Math.min(this.chunk, maxSeg);
    const staging = this.stagingFor(bufs, chunk);
    const mod = (x: number) => ((x % R) + R) % R;

    // One ring step: every rank r sends segment segOf(r) to r + 1, in chunks; `add` accumulates,
    // otherwise the receiver copies.
    const step = (segOf: (r: number) => number, add: boolean) => {
      for (let off = 0; off < maxSeg; off += chunk) {
        // send: each rank copies its outgoing chunk into its staging buffer
        for (let r = 0; r < R; r++) {
          const seg = segOf(r);
          const a = start(seg) + off;
          const b = Math.min(start(seg + 1), a + chunk);
          if (a < b) staging[r].set(bufs[r].subarray(a, b));
        }
        // receive: rank r consumes the staging buffer of rank r − 1
        for (let r = 0; r < R; r++) {
          const src = mod(r - 1);
          const seg = segOf(src);
          const a = start(seg) + off;
          const b = Math.min(start(seg + 1), a + chunk);
          if (a >= b) continue;
          const dst = bufs[r];
          const msg = staging[src];
          if (add) {
            const len = b - a;
            for (let i = 0; i < len; i++) dst[a + i] += msg[i]; // a Float32Array store rounds: an fp32 add
          } else {
            dst.set(msg.subarray(0, b - a), a);
          }
        }
      }
    };

    for (let s = 0; s < R - 1; s++) step((r) => mod(r - s), true);
    if (mean) {
      for (let r = 0; r < R; r++) {
        const seg = mod(r + 1);
        const buf = bufs[r];
        for (let i = start(seg), e = start(seg + 1); i < e; i++) buf[i] = buf[i] / R;
      }
    }
    for (let s = 0; s < R - 1; s++) step((r) => mod(r + 1 - s), false);
  }

  /** Pipelined chain root → root+1 → ... → root−1, chunk by chunk through the staging buffers. */
  private chainBroadcast(bufs: Buf[], root: number): void {
    const R = this.size;
    const n = bufs[0].length;
    const chunk = Math.min(this.chunk, n);
    const staging = this.stagingFor(bufs, chunk);
    for (let off = 0; off < n; off += chunk) {
      const end = Math.min(n, off + chunk);
      for (let h = 0; h < R - 1; h++) {
        const from = (root + h) % R;
        const to = (from + 1) % R;
        staging[from].set(bufs[from].subarray(off, end));
        bufs[to].set(staging[from].subarray(0, end - off), off);
      }
    }
  }
}
