/**
 * The collective-communication interface that data-parallel training is written against.
 *
 * Every method is collective: it completes only when all `worldSize` ranks of the group have
 * called it, in the same order, with compatible arguments (same operation, same buffer length and
 * element type, same root). A backend that cannot complete a collective (a mismatch, a rank that
 * never arrives, a closed peer) rejects it on every waiting rank with a {@link CommError}.
 *
 * Backends: "local-ring" (in-process ring all-reduce for CPU ranks driven as async tasks on one
 * JS thread, `createLocalRing`); "tcp-ring" (ranks in several processes or nodes, ring all-reduce over
 * TCP with a torchrun-style rendezvous, `createTcpGroup`); a NCCL backend implements the same
 * interface later and reuses the TCP rendezvous for its unique id.
 */
export interface Communicator {
  readonly rank: number;
  readonly worldSize: number;
  /** "local-ring" for the in-process backend, "tcp-ring" across processes. */
  readonly backend: string;
  /** In place: every rank ends with the element-wise mean over ranks, bitwise identical on all ranks. */
  allReduceMean(data: Float32Array): Promise<void>;
  /** In place, float64 sums of small vectors (token counts, loss sums), identical on all ranks. */
  allReduceSum(data: Float64Array): Promise<void>;
  /** Rank `root`'s data (default 0) copied to all ranks. */
  broadcast(data: Float32Array | Float64Array, root?: number): Promise<void>;
  barrier(): Promise<void>;
  /**
   * Leaves the group; collectives still waiting for this rank reject on the other ranks. A reason
   * (this rank's error) is passed on to the other ranks by backends that span processes.
   */
  close(reason?: string): void;
}

/** A collective that could not complete (mismatch, timeout, closed peer). */
export class CommError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CommError";
  }
}
