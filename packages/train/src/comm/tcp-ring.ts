import * as net from "node:net";
import * as os from "node:os";
import { CommError, type Communicator } from "./communicator.js";

/**
 * Data-parallel ranks in several OS processes (one node or many) connected over TCP.
 *
 * Rendezvous (torchrun-style): the process hosting global rank 0 listens on `masterPort` (all
 * interfaces). Every rank, the local ranks of that process included, opens a control connection to
 * `masterAddr:masterPort` (retrying until the join timeout: the master may start later) and sends
 * one JSON line `{t:"join", rank, worldSize, fingerprint, chunk, host, port}` (host:port = its
 * process's data listener). The master checks the announcements (duplicate ranks, world size,
 * fingerprint, chunk size): any inconsistency fails every rank with one message. When all ranks
 * have joined it sends everyone the table of data addresses; rank r then connects to rank r+1.
 * The control connections stay open: they carry failure notices ("left", "abort") and small
 * key/value blobs (`serveBlob` / `fetchBlob`, e.g. NCCL's unique id).
 *
 * Data path: the ring of local-ring.ts over sockets, with the same segments and the same order of
 * float32 (or float64) adds, the owner's 1/R scaling and copies in the all-gather, so the results
 * are bitwise those of `createLocalRing` with the same world size. Frames are length-prefixed with a
 * header (op kind, element type, phase, step, call number, element count, root, offset): a rank
 * that receives a frame of another collective reports a mismatch instead of summing it.
 *
 * Failure: a rank whose control connection drops (process killed, node lost) is announced by the
 * master to every other rank, whose pending and later collectives reject with
 * `CommError("rank K (host:port) left the group: ...")`. A collective that hears nothing from its
 * left neighbour for `timeoutMs` rejects everywhere. Nothing waits forever.
 */
export interface TcpGroupOptions {
  /** Ranks in the whole world. */
  worldSize: number;
  /** The global ranks this process hosts. */
  localRanks: number[];
  masterAddr: string;
  masterPort: number;
  /** A string every process must agree on (the run fingerprint); a mismatch fails the rendezvous. */
  fingerprint?: string;
  /** Per collective (default GM_COMM_TIMEOUT_MS or 10 min). */
  timeoutMs?: number;
  /** Rendezvous (default GM_JOIN_TIMEOUT_MS or 300 s). */
  joinTimeoutMs?: number;
  /** Elements per frame (default 1 Mi); must be the same in every process. */
  chunkElements?: number;
  /** The address other processes reach this one at (default: the local address of the connection to the master, or GM_ADVERTISE_ADDR). */
  advertiseHost?: string;
  /** Diagnostics (joins, departures). */
  log?: (message: string) => void;
}

export interface TcpCommunicator extends Communicator {
  /** Stores `data` under `key` at the master (visible to every rank of the group). */
  serveBlob(key: string, data: Uint8Array): Promise<void>;
  /** The blob stored under `key`, waiting until some rank serves it (or `timeoutMs`, default the join timeout). */
  fetchBlob(key: string, timeoutMs?: number): Promise<Uint8Array>;
  /** Leaves the group; with a reason (an error), the other ranks fail with it instead of timing out. */
  close(reason?: string): void;
}

const envMs = (name: string, dflt: number): number => {
  const v = process.env[name];
  if (v === undefined || v.trim() === "") return dflt;
  const n = Number(v);
  if (!(n > 0)) throw new RangeError(`${name}=${v} must be a positive number of milliseconds`);
  return n;
};

const MAGIC = 0x474d5452; // "GMTR"
const HEADER = 28; // u32 body length + 24 bytes of header
const KINDS = ["", "allReduceMean", "allReduceSum", "broadcast", "barrier"] as const;
type OpKind = "allReduceMean" | "allReduceSum" | "broadcast" | "barrier";
const DTYPES = ["no data", "Float32Array", "Float64Array"] as const;
type Buf = Float32Array | Float64Array;
const MAX_TIMER_MS = 2 ** 31 - 1;

const plural = (n: number, word: string) => `${word}${n === 1 ? "" : "s"}`;
const listRanks = (rs: number[]) => `${plural(rs.length, "rank")} ${rs.join(", ")}`;
const cleanHost = (h: string | undefined) => (h ?? "").replace(/^::ffff:/, "") || "127.0.0.1";
const hostPort = (h: string, p: number) => (h.includes(":") ? `[${h}]:${p}` : `${h}:${p}`);

interface Header {
  kind: number;
  dtype: number;
  phase: number;
  step: number;
  seq: number;
  n: number;
  root: number;
  offset: number;
}

interface Frame extends Header {
  payload: Buffer;
}

function encodeFrame(h: Header, data?: Buf, a = 0, b = 0): Buffer {
  const bytes = data && b > a ? (b - a) * data.BYTES_PER_ELEMENT : 0;
  const f = Buffer.allocUnsafe(HEADER + bytes);
  f.writeUInt32LE(HEADER - 4 + bytes, 0);
  f.writeUInt8(h.kind, 4);
  f.writeUInt8(h.dtype, 5);
  f.writeUInt8(h.phase, 6);
  f.writeUInt8(0, 7);
  f.writeUInt32LE(h.step, 8);
  f.writeUInt32LE(h.seq >>> 0, 12);
  f.writeUInt32LE(h.n, 16);
  f.writeUInt32LE(h.root, 20);
  f.writeUInt32LE(h.offset, 24);
  if (bytes) Buffer.from(data!.buffer, data!.byteOffset + a * data!.BYTES_PER_ELEMENT, bytes).copy(f, HEADER);
  return f;
}

/** Frames from the left neighbour, in order; recv() waits for the next one. */
class FrameQueue {
  private chunks: Buffer[] = [];
  private have = 0;
  private frames: Frame[] = [];
  private waiter: { resolve: (f: Frame) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  push(data: Buffer): void {
    this.chunks.push(data);
    this.have += data.length;
    for (;;) {
      if (this.have < 4) break;
      const head = this.peek(4);
      const len = head.readUInt32LE(0);
      if (this.have < 4 + len) break;
      const buf = this.take(4 + len);
      const fr: Frame = {
        kind: buf.readUInt8(4),
        dtype: buf.readUInt8(5),
        phase: buf.readUInt8(6),
        step: buf.readUInt32LE(8),
        seq: buf.readUInt32LE(12),
        n: buf.readUInt32LE(16),
        root: buf.readUInt32LE(20),
        offset: buf.readUInt32LE(24),
        payload: buf.subarray(HEADER),
      };
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve(fr);
      } else this.frames.push(fr);
    }
  }
  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0];
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all;
  }
  private take(n: number): Buffer {
    const first = this.peek(n);
    const out = Buffer.from(first.subarray(0, n)); // own copy: the payload is read later
    const rest = first.subarray(n);
    this.chunks[0] = rest;
    if (!rest.length) this.chunks.shift();
    this.have -= n;
    return out;
  }
  recv(): Promise<Frame> {
    if (this.frames.length) return Promise.resolve(this.frames.shift()!);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }
  fail(e: Error): void {
    if (!this.failure) this.failure = e;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(e);
  }
}

/** Newline-delimited JSON over a socket. */
function lineReader(sock: net.Socket, onMessage: (m: Record<string, unknown>) => void): void {
  let pending = "";
  sock.setEncoding("utf8");
  sock.on("data", (d: string) => {
    pending += d;
    let i: number;
    while ((i = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, i);
      pending = pending.slice(i + 1);
      if (!line.trim()) continue;
      let m: Record<string, unknown>;
      try {
        m = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      onMessage(m);
    }
  });
}

const send = (sock: net.Socket | undefined, m: object) => {
  if (sock && !sock.destroyed && sock.writable) sock.write(JSON.stringify(m) + "\n");
};

interface Joined {
  rank: number;
  sock: net.Socket;
  host: string;
  port: number;
  fingerprint: string;
  worldSize: number;
  chunk: number;
  hostname: string;
  pid: number;
  bye: boolean;
  reason?: string;
}

/** The rendezvous server of the process hosting rank 0. */
class Master {
  private server!: net.Server;
  private joined = new Map<number, Joined>();
  private failed: string | undefined;
  private complete = false;
  private blobs = new Map<string, string>();
  private gets: { key: string; id: number; sock: net.Socket }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sockets = new Set<net.Socket>();

  constructor(
    private readonly o: { worldSize: number; masterAddr: string; masterPort: number; joinTimeoutMs: number; log?: (m: string) => void },
  ) {}

  get where(): string {
    return hostPort(this.o.masterAddr, this.o.masterPort);
  }

  listen(): Promise<void> {
    this.server = net.createServer((sock) => this.accept(sock));
    return new Promise((resolve, reject) => {
      this.server.once("error", (e: NodeJS.ErrnoException) =>
        reject(
          new CommError(
            `cannot listen on port ${this.o.masterPort} for the rendezvous (${e.code ?? e.message})${e.code === "EADDRINUSE" ? ": another run (or program) uses it; choose another --master-port" : ""}`,
          ),
        ),
      );
      this.server.listen(this.o.masterPort, () => {
        this.server.on("error", () => undefined);
        if (Number.isFinite(this.o.joinTimeoutMs))
          this.timer = setTimeout(() => this.joinTimeout(), Math.min(this.o.joinTimeoutMs, MAX_TIMER_MS));
        resolve();
      });
    });
  }

  private joinTimeout(): void {
    if (this.complete || this.failed) return;
    const missing = [...Array(this.o.worldSize).keys()].filter((r) => !this.joined.has(r));
    const have = [...this.joined.keys()].sort((a, b) => a - b);
    this.fail(
      `rendezvous at ${this.where} timed out after ${Math.round(this.o.joinTimeoutMs / 1000)} s: ${listRanks(missing)} did not join ` +
        `(joined: ${have.length ? have.join(", ") : "none"}); start every process with the same --nnodes, --master-addr and --master-port, or check the network (GM_JOIN_TIMEOUT_MS sets the wait)`,
    );
  }

  private fail(message: string): void {
    if (this.failed) return;
    this.failed = message;
    for (const j of this.joined.values()) send(j.sock, { t: "error", message });
  }

  private accept(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.setNoDelay(true);
    let me: Joined | undefined;
    let sockError: string | undefined;
    sock.on("error", (e: NodeJS.ErrnoException) => (sockError = e.code ?? e.message));
    sock.on("close", () => {
      this.sockets.delete(sock);
      this.gets = this.gets.filter((g) => g.sock !== sock);
      if (!me || this.joined.get(me.rank) !== me) return;
      if (!this.complete) {
        // Before the rendezvous completed: the rank may reconnect.
        this.joined.delete(me.rank);
        return;
      }
      if (me.bye) return;
      me.bye = true;
      const reason = me.reason ?? `its process exited or lost the connection${sockError ? ` (${sockError})` : ""}`;
      const message = `rank ${me.rank} (${hostPort(me.host, me.port)}) left the group: ${reason}`;
      this.o.log?.(message);
      for (const j of this.joined.values()) if (j !== me && !j.bye) send(j.sock, { t: "left", rank: me.rank, message });
    });
    lineReader(sock, (m) => {
      switch (m.t) {
        case "join": {
          if (this.failed) return send(sock, { t: "error", message: this.failed });
          const j: Joined = {
            rank: Number(m.rank),
            sock,
            host: String(m.host),
            port: Number(m.port),
            fingerprint: String(m.fingerprint),
            worldSize: Number(m.worldSize),
            chunk: Number(m.chunk),
            hostname: String(m.hostname),
            pid: Number(m.pid),
            bye: false,
          };
          const who = `rank ${j.rank} (${j.hostname} pid ${j.pid})`;
          if (j.worldSize !== this.o.worldSize) {
            send(sock, { t: "error", message: `${who} announced world size ${j.worldSize} but rank 0 has ${this.o.worldSize}; start every process with the same --nnodes/--ranks (or launcher environment)` });
            return this.fail(`${who} announced world size ${j.worldSize} but rank 0 has ${this.o.worldSize}; start every process with the same --nnodes/--ranks (or launcher environment)`);
          }
          if (!Number.isInteger(j.rank) || j.rank < 0 || j.rank >= this.o.worldSize) {
            send(sock, { t: "error", message: `${who}: rank out of range 0..${this.o.worldSize - 1}` });
            return this.fail(`${who}: rank out of range 0..${this.o.worldSize - 1}`);
          }
          const prev = this.joined.get(j.rank);
          if (prev || this.complete) {
            const msg = prev
              ? `rank ${j.rank} joined twice (${prev.hostname} pid ${prev.pid} and ${j.hostname} pid ${j.pid}); every process needs its own --node-rank (or RANK)`
              : `${who} tried to join a group that is already complete`;
            send(sock, { t: "error", message: msg });
            return this.fail(msg);
          }
          const first = [...this.joined.values()][0];
          if (first && (first.fingerprint !== j.fingerprint || first.chunk !== j.chunk)) {
            const msg =
              first.fingerprint !== j.fingerprint
                ? `run mismatch: rank ${j.rank} (${j.hostname}) announced run fingerprint ${j.fingerprint} but rank ${first.rank} (${first.hostname}) has ${first.fingerprint}; every process must be started with the same config, data and flags`
                : `rank ${j.rank} uses chunks of ${j.chunk} elements but rank ${first.rank} ${first.chunk}`;
            send(sock, { t: "error", message: msg });
            return this.fail(msg);
          }
          me = j;
          this.joined.set(j.rank, j);
          this.o.log?.(`rendezvous: rank ${j.rank} joined from ${j.hostname} (${this.joined.size}/${this.o.worldSize})`);
          if (this.joined.size === this.o.worldSize) {
            this.complete = true;
            if (this.timer) clearTimeout(this.timer);
            const peers = [...this.joined.values()].sort((a, b) => a.rank - b.rank).map((p) => ({ rank: p.rank, host: p.host, port: p.port, hostname: p.hostname }));
            for (const p of this.joined.values()) send(p.sock, { t: "table", peers });
          }
          return;
        }
        case "abort": {
          if (!me) return;
          me.reason = String(m.message);
          for (const j of this.joined.values()) if (j !== me && !j.bye) send(j.sock, { t: "abort", message: me.reason });
          return;
        }
        case "bye": {
          if (!me) return;
          me.bye = true;
          return;
        }
        case "set": {
          const key = String(m.key);
          this.blobs.set(key, String(m.value));
          send(sock, { t: "ok", id: m.id });
          const ready = this.gets.filter((g) => g.key === key);
          this.gets = this.gets.filter((g) => g.key !== key);
          for (const g of ready) send(g.sock, { t: "value", id: g.id, value: this.blobs.get(key) });
          return;
        }
        case "get": {
          const key = String(m.key);
          if (this.blobs.has(key)) send(sock, { t: "value", id: m.id, value: this.blobs.get(key) });
          else this.gets.push({ key, id: Number(m.id), sock });
          return;
        }
      }
    });
  }

  /** This process's ranks are done: tell the others it is a normal end, then stop. */
  shutdown(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const j of this.joined.values()) send(j.sock, { t: "shutdown" });
    this.server.close();
    for (const s of this.sockets) s.end();
  }
}

interface Peer {
  rank: number;
  host: string;
  port: number;
}

/** The part of the group that lives in this process: data listener, control clients, abort state. */
class Hub {
  aborted: string | undefined;
  peers: Peer[] = [];
  readonly comms = new Map<number, TcpRank>();
  dataServer!: net.Server;
  dataPort = 0;
  master?: Master;
  private closedLocal = 0;

  constructor(readonly o: Required<Pick<TcpGroupOptions, "worldSize" | "masterAddr" | "masterPort" | "timeoutMs" | "joinTimeoutMs" | "chunkElements">> & TcpGroupOptions) {}

  addr(rank: number): string {
    const p = this.peers[rank];
    return p ? hostPort(p.host, p.port) : "unknown address";
  }

  /** The group can no longer make progress: every pending and later collective of this process rejects. */
  abort(message: string): void {
    if (this.aborted !== undefined) return;
    this.aborted = message;
    this.o.log?.(message);
    for (const c of this.comms.values()) c.left?.fail(new CommError(message));
  }

  /** Abort here and have the master tell every other rank. */
  failGroup(rank: number, message: string): void {
    const first = this.aborted === undefined;
    this.abort(message);
    if (first) send(this.comms.get(rank)?.control, { t: "abort", message });
  }

  rankClosed(): void {
    this.closedLocal++;
    if (this.closedLocal === this.comms.size) {
      this.dataServer.close();
      this.master?.shutdown();
    }
  }
}

async function connectWithRetry(host: string, port: number, deadline: number, what: () => string): Promise<net.Socket> {
  let lastError = "";
  let wait = 100;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host, port });
        const t = setTimeout(() => s.destroy(new Error("ETIMEDOUT")), Math.max(100, Math.min(10_000, deadline - Date.now())));
        s.once("connect", () => {
          clearTimeout(t);
          s.removeAllListeners("error");
          resolve(s);
        });
        s.once("error", (e: NodeJS.ErrnoException) => {
          clearTimeout(t);
          s.destroy();
          reject(e);
        });
      });
    } catch (e) {
      lastError = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      if (Date.now() + wait > deadline) throw new CommError(`${what()} (last error: ${lastError})`);
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(1000, wait * 2);
    }
  }
}

class TcpRank implements TcpCommunicator {
  readonly backend = "tcp-ring";
  readonly worldSize: number;
  control?: net.Socket;
  /** Frames from rank − 1. */
  left?: FrameQueue;
  /** Socket to rank + 1. */
  right?: net.Socket;
  /** Socket from rank − 1. */
  leftSock?: net.Socket;
  private seq = 0;
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;
  private masterShutdown = false;
  private requests = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private leftTimer?: NodeJS.Timeout;

  constructor(
    private readonly hub: Hub,
    readonly rank: number,
  ) {
    this.worldSize = hub.o.worldSize;
  }

  private get R() {
    return this.worldSize;
  }
  private get leftRank() {
    return (this.rank - 1 + this.R) % this.R;
  }
  private get rightRank() {
    return (this.rank + 1) % this.R;
  }

  /** Joins the rendezvous; resolves with the peer table. */
  async join(fingerprint: string): Promise<Peer[]> {
    const o = this.hub.o;
    const where = hostPort(o.masterAddr, o.masterPort);
    const deadline = Date.now() + o.joinTimeoutMs;
    for (;;) {
      const sock = await connectWithRetry(o.masterAddr, o.masterPort, deadline, () => `rank ${this.rank} could not reach the rendezvous master at ${where} within ${Math.round(o.joinTimeoutMs / 1000)} s (is the node-rank 0 process running, and --master-addr/--master-port right?)`);
      sock.setNoDelay(true);
      const host = cleanHost(o.advertiseHost ?? process.env.GM_ADVERTISE_ADDR ?? sock.localAddress);
      const r = await new Promise<Peer[] | "retry">((resolve, reject) => {
        // The master sends the missing ranks at its own deadline; this one is the fallback.
        const t = setTimeout(() => {
          sock.destroy();
          reject(new CommError(`rank ${this.rank}: the rendezvous at ${where} did not complete within ${Math.round(o.joinTimeoutMs / 1000)} s`));
        }, Math.min(MAX_TIMER_MS, Math.max(0, deadline - Date.now()) + 5000));
        let done = false;
        lineReader(sock, (m) => {
          if (done) return this.onControl(m);
          if (m.t === "table") {
            done = true;
            clearTimeout(t);
            resolve(m.peers as Peer[]);
          } else if (m.t === "error") {
            done = true;
            clearTimeout(t);
            sock.destroy();
            reject(new CommError(`rendezvous failed: ${String(m.message)}`));
          }
        });
        sock.on("error", () => undefined);
        sock.on("close", () => {
          if (!done) {
            done = true;
            clearTimeout(t);
            resolve("retry");
          } else this.onControlClosed();
        });
        send(sock, { t: "join", rank: this.rank, worldSize: o.worldSize, fingerprint, chunk: o.chunkElements, host, port: this.hub.dataPort, hostname: os.hostname(), pid: process.pid });
      });
      if (r === "retry") {
        if (Date.now() > deadline) throw new CommError(`rank ${this.rank}: the rendezvous master at ${where} closed the connection before the group was complete`);
        await new Promise((res) => setTimeout(res, 200));
        continue;
      }
      this.control = sock;
      return r;
    }
  }

  private onControl(m: Record<string, unknown>): void {
    if (m.t === "left" || m.t === "abort") this.hub.abort(String(m.message));
    else if (m.t === "shutdown") this.masterShutdown = true;
    else if (m.t === "value" || m.t === "ok") {
      const req = this.requests.get(Number(m.id));
      this.requests.delete(Number(m.id));
      req?.resolve(m.value);
    }
  }

  private onControlClosed(): void {
    for (const r of this.requests.values()) r.reject(new CommError(`the rendezvous master at ${hostPort(this.hub.o.masterAddr, this.hub.o.masterPort)} went away`));
    this.requests.clear();
    if (this.closed || this.masterShutdown) return;
    this.hub.abort(`rank 0 (${this.hub.addr(0)}) left the group: the rendezvous master (rank 0's process) closed its connection; its process exited or the network failed`);
  }

  /** A data socket closed: unless the master explains it within a moment, the neighbour is gone. */
  peerGone(rank: number, why: string): void {
    if (this.closed || this.hub.aborted) return;
    const msg = `rank ${rank} (${this.hub.addr(rank)}) left the group: ${why}`;
    if (this.leftTimer) return;
    this.leftTimer = setTimeout(() => {
      if (this.hub.aborted === undefined && !this.closed) this.hub.abort(msg);
    }, 300);
    this.leftTimer.unref();
  }

  async connectRight(deadline: number): Promise<void> {
    const p = this.hub.peers[this.rightRank];
    const sock = await connectWithRetry(p.host, p.port, deadline, () => `rank ${this.rank} could not connect to rank ${p.rank} at ${hostPort(p.host, p.port)}`);
    sock.setNoDelay(true);
    const hello = Buffer.alloc(12);
    hello.writeUInt32LE(MAGIC, 0);
    hello.writeUInt32LE(this.rank, 4);
    hello.writeUInt32LE(p.rank, 8);
    sock.write(hello);
    let err = "";
    sock.on("error", (e: NodeJS.ErrnoException) => (err = e.code ?? e.message));
    sock.on("close", () => this.peerGone(p.rank, `its connection closed${err ? ` (${err})` : ""}`));
    this.right = sock;
  }

  allReduceMean(data: Float32Array): Promise<void> {
    return this.enqueue("allReduceMean", data, 0);
  }
  allReduceSum(data: Float64Array): Promise<void> {
    return this.enqueue("allReduceSum", data, 0);
  }
  broadcast(data: Float32Array | Float64Array, root = 0): Promise<void> {
    return this.enqueue("broadcast", data, root);
  }
  barrier(): Promise<void> {
    return this.enqueue("barrier", undefined, 0);
  }

  serveBlob(key: string, data: Uint8Array): Promise<void> {
    return this.request({ t: "set", key, value: Buffer.from(data).toString("base64") }).then(() => undefined);
  }
  fetchBlob(key: string, timeoutMs = this.hub.o.joinTimeoutMs): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new CommError(`fetchBlob("${key}"): no rank served it within ${timeoutMs} ms`)), Math.min(timeoutMs, MAX_TIMER_MS));
      this.request({ t: "get", key }).then(
        (v) => {
          clearTimeout(t);
          resolve(new Uint8Array(Buffer.from(String(v), "base64")));
        },
        (e) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });
  }
  private request(m: Record<string, unknown>): Promise<unknown> {
    if (this.closed || !this.control || this.control.destroyed) return Promise.reject(new CommError(`tcp-ring rank ${this.rank}: no connection to the rendezvous master`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.requests.set(id, { resolve, reject });
      send(this.control, { ...m, id });
    });
  }

  close(reason?: string): void {
    if (this.closed) return;
    if (reason !== undefined && this.hub.aborted === undefined) {
      const msg = `rank ${this.rank} (${this.hub.addr(this.rank)}) left the group: ${reason}`;
      send(this.control, { t: "abort", message: msg });
      this.hub.abort(msg);
    }
    this.closed = true;
    if (this.leftTimer) clearTimeout(this.leftTimer);
    send(this.control, { t: "bye" });
    this.control?.end();
    this.right?.end();
    this.leftSock?.end();
    // A peer that never answers the FIN does not keep this process alive.
    for (const sock of [this.control, this.right, this.leftSock]) setTimeout(() => sock?.destroy(), 5000).unref();
    this.left?.fail(new CommError(`tcp-ring rank ${this.rank}: the communicator was closed`));
    this.hub.rankClosed();
  }

  private enqueue(kind: OpKind, data: Buf | undefined, root: unknown): Promise<void> {
    const seq = this.seq++;
    const run = () => this.run(kind, seq, data, root);
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private checkArgs(kind: OpKind, data: unknown, root: unknown): string | undefined {
    const typeName = (x: unknown) => (x === null ? "null" : typeof x === "object" ? ((x as object).constructor?.name ?? "object") : typeof x);
    if (kind === "allReduceMean" && !(data instanceof Float32Array)) return `allReduceMean needs a Float32Array (got ${typeName(data)})`;
    if (kind === "allReduceSum" && !(data instanceof Float64Array)) return `allReduceSum needs a Float64Array (got ${typeName(data)})`;
    if (kind === "broadcast") {
      if (!(data instanceof Float32Array || data instanceof Float64Array)) return `broadcast needs a Float32Array or Float64Array (got ${typeName(data)})`;
      if (typeof root !== "number" || !Number.isInteger(root) || root < 0 || root >= this.R) return `broadcast root must be an integer rank in 0..${this.R - 1} (got ${String(root)})`;
    }
    return undefined;
  }

  private async run(kind: OpKind, seq: number, data: Buf | undefined, root: unknown): Promise<void> {
    if (this.closed) throw new CommError(`tcp-ring rank ${this.rank}: ${kind} on a closed communicator`);
    if (this.hub.aborted !== undefined) throw new CommError(this.hub.aborted);
    const problem = this.checkArgs(kind, data, root);
    if (problem) {
      const msg = `tcp-ring ${kind} (call #${seq}): rank ${this.rank}: ${problem}`;
      if (this.R > 1) this.hub.failGroup(this.rank, msg);
      throw new CommError(msg);
    }
    if (this.R === 1) return;
    const timeoutMs = this.hub.o.timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let lastHeard = Date.now();
    if (Number.isFinite(timeoutMs)) {
      const check = () => {
        const idle = Date.now() - lastHeard;
        if (idle >= timeoutMs) {
          this.hub.failGroup(
            this.rank,
            `${kind} (call #${seq}) timed out after ${timeoutMs} ms on rank ${this.rank}: nothing heard from rank ${this.leftRank} (${this.hub.addr(this.leftRank)}); ` +
              `a rank that stopped, hung or skipped a collective (GM_COMM_TIMEOUT_MS sets the limit)`,
          );
        } else timer = setTimeout(check, Math.min(MAX_TIMER_MS, timeoutMs - idle));
      };
      timer = setTimeout(check, Math.min(MAX_TIMER_MS, timeoutMs));
    }
    const recv = async (h: Header): Promise<Frame> => {
      const f = await this.left!.recv();
      lastHeard = Date.now();
      this.expect(f, h);
      return f;
    };
    try {
      if (kind === "barrier") {
        for (let s = 0; s < this.R - 1; s++) {
          const h: Header = { kind: 4, dtype: 0, phase: 3, step: s, seq, n: 0, root: 0, offset: 0 };
          this.write(encodeFrame(h));
          await recv(h);
        }
      } else if (kind === "broadcast") await this.chainBroadcast(seq, data!, root as number, recv);
      else await this.ringAllReduce(seq, kind, data!, recv);
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  private write(frame: Buffer): void {
    if (this.hub.aborted !== undefined) throw new CommError(this.hub.aborted);
    const s = this.right!;
    if (s.destroyed || !s.writable) {
      throw new CommError(`rank ${this.rightRank} (${this.hub.addr(this.rightRank)}) left the group: its connection is closed`);
    }
    s.write(frame);
  }

  /** A frame of another collective than this rank's: one message for the whole group. */
  private expect(f: Frame, h: Header): void {
    const same = f.kind === h.kind && f.dtype === h.dtype && f.seq === h.seq >>> 0 && f.n === h.n && f.root === h.root && f.phase === h.phase && f.step === h.step && f.offset === h.offset;
    if (same) return;
    const desc = (x: Header) => `${KINDS[x.kind] ?? `op ${x.kind}`}${x.kind === 4 ? "" : ` of ${x.n} ${DTYPES[x.dtype] ?? "?"} elements`}${x.kind === 3 ? ` from root ${x.root}` : ""} (call #${x.seq})`;
    const msg =
      f.kind === h.kind && f.dtype === h.dtype && f.seq === h.seq && f.n === h.n && f.root === h.root
        ? `tcp-ring protocol error between rank ${this.leftRank} and rank ${this.rank} at call #${h.seq} (phase ${f.phase}/${h.phase}, step ${f.step}/${h.step}, offset ${f.offset}/${h.offset}); different chunk sizes?`
        : `collective mismatch at call #${h.seq}: rank ${this.leftRank} called ${desc(f)}, rank ${this.rank} called ${desc(h)}; every rank must issue the same collectives in the same order with the same lengths`;
    this.hub.failGroup(this.rank, msg);
    throw new CommError(msg);
  }

  private payloadView(f: Frame, like: Buf, count: number): Buf {
    const bytes = count * like.BYTES_PER_ELEMENT;
    if (f.payload.length !== bytes) {
      const msg = `tcp-ring protocol error: rank ${this.rank} expected ${count} elements from rank ${this.leftRank} at call #${f.seq}, got ${f.payload.length} bytes`;
      this.hub.failGroup(this.rank, msg);
      throw new CommError(msg);
    }
    // The payload is our own copy (FrameQueue.take); view it in place when aligned, else copy.
    const p = f.payload;
    if (p.byteOffset % like.BYTES_PER_ELEMENT === 0)
      return like instanceof Float32Array ? new Float32Array(p.buffer, p.byteOffset, count) : new Float64Array(p.buffer, p.byteOffset, count);
    const out = like instanceof Float32Array ? new Float32Array(count) : new Float64Array(count);
    new Uint8Array(out.buffer).set(p);
    return out;
  }

  /** Rank r's side of local-ring.ts's ring: same segments, same adds, same copies. */
  private async ringAllReduce(seq: number, kind: OpKind, buf: Buf, recv: (h: Header) => Promise<Frame>): Promise<void> {
    const R = this.R, r = this.rank, n = buf.length;
    const mean = kind === "allReduceMean";
    const k = mean ? 1 : 2;
    const dtype = buf instanceof Float32Array ? 1 : 2;
    const start = (s: number) => Math.floor((s * n) / R);
    const maxSeg = Math.ceil(n / R);
    const chunk = Math.min(this.hub.o.chunkElements, maxSeg);
    const frames = maxSeg === 0 ? 1 : Math.ceil(maxSeg / chunk);
    const mod = (x: number) => ((x % R) + R) % R;
    const step = async (phase: number, s: number, sendSeg: number, recvSeg: number, add: boolean) => {
      for (let f = 0; f < frames; f++) {
        const off = f * chunk;
        const a = start(sendSeg) + off;
        const b = Math.min(start(sendSeg + 1), a + chunk);
        this.write(encodeFrame({ kind: k, dtype, phase, step: s, seq, n, root: 0, offset: off }, buf, a, Math.max(a, b)));
      }
      for (let f = 0; f < frames; f++) {
        const off = f * chunk;
        const fr = await recv({ kind: k, dtype, phase, step: s, seq, n, root: 0, offset: off });
        const a = start(recvSeg) + off;
        const b = Math.min(start(recvSeg + 1), a + chunk);
        const len = Math.max(0, b - a);
        const msg = this.payloadView(fr, buf, len);
        if (!len) continue;
        if (add) for (let i = 0; i < len; i++) buf[a + i] += msg[i]; // a Float32Array store rounds: an fp32 add
        else buf.set(msg, a);
      }
    };
    for (let s = 0; s < R - 1; s++) await step(0, s, mod(r - s), mod(r - 1 - s), true);
    if (mean) {
      const seg = mod(r + 1);
      for (let i = start(seg), e = start(seg + 1); i < e; i++) buf[i] = buf[i] / R;
    }
    for (let s = 0; s < R - 1; s++) await step(1, s, mod(r + 1 - s), mod(r - s), false);
  }

  /** Chain root → root+1 → ... → root−1, chunk by chunk, forwarded as received. */
  private async chainBroadcast(seq: number, buf: Buf, root: number, recv: (h: Header) => Promise<Frame>): Promise<void> {
    const R = this.R, n = buf.length;
    const dtype = buf instanceof Float32Array ? 1 : 2;
    const chunk = Math.max(1, Math.min(this.hub.o.chunkElements, n));
    const frames = n === 0 ? 1 : Math.ceil(n / chunk);
    const pos = (this.rank - root + R) % R;
    for (let f = 0; f < frames; f++) {
      const off = f * chunk;
      const end = Math.min(n, off + chunk);
      const h: Header = { kind: 3, dtype, phase: 2, step: 0, seq, n, root, offset: off };
      if (pos > 0) {
        const fr = await recv(h);
        const msg = this.payloadView(fr, buf, Math.max(0, end - off));
        if (end > off) buf.set(msg, off);
      }
      if (pos < R - 1) this.write(encodeFrame(h, buf, off, Math.max(off, end)));
    }
  }
}

/**
 * Joins (or, in the process hosting rank 0, serves) the rendezvous and connects the ring; one
 * communicator per local rank, in the order of `localRanks`.
 */
export async function createTcpGroup(opts: TcpGroupOptions): Promise<TcpCommunicator[]> {
  const { worldSize, localRanks } = opts;
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`tcp-ring: worldSize must be a positive integer (got ${worldSize})`);
  if (!localRanks.length || localRanks.some((r) => !Number.isInteger(r) || r < 0 || r >= worldSize) || new Set(localRanks).size !== localRanks.length)
    throw new RangeError(`tcp-ring: localRanks must be distinct ranks in 0..${worldSize - 1} (got ${localRanks.join(",")})`);
  const chunkElements = opts.chunkElements ?? 1 << 20;
  if (!Number.isInteger(chunkElements) || chunkElements < 1) throw new RangeError(`tcp-ring: chunkElements must be a positive integer (got ${chunkElements})`);
  const timeoutMs = opts.timeoutMs ?? envMs("GM_COMM_TIMEOUT_MS", 10 * 60 * 1000);
  const joinTimeoutMs = opts.joinTimeoutMs ?? envMs("GM_JOIN_TIMEOUT_MS", 300 * 1000);
  if (!(timeoutMs > 0) || !(joinTimeoutMs > 0)) throw new RangeError(`tcp-ring: timeouts must be positive`);
  const hub = new Hub({ ...opts, chunkElements, timeoutMs, joinTimeoutMs });
  const ranks = localRanks.map((r) => new TcpRank(hub, r));
  for (const c of ranks) hub.comms.set(c.rank, c);
  const cleanup = () => {
    for (const c of ranks) {
      c.control?.destroy();
      c.right?.destroy();
    }
    hub.dataServer?.close();
    hub.master?.shutdown();
  };
  try {
    if (localRanks.includes(0)) {
      hub.master = new Master({ worldSize, masterAddr: opts.masterAddr, masterPort: opts.masterPort, joinTimeoutMs, log: opts.log });
      await hub.master.listen();
    }
    // Incoming ring connections: a 12-byte hello (magic, from, to), then frames.
    const accepted = new Map<number, () => void>();
    const leftReady = new Map<number, Promise<void>>();
    for (const c of ranks) {
      c.left = new FrameQueue();
      leftReady.set(c.rank, new Promise<void>((res) => accepted.set(c.rank, res)));
    }
    hub.dataServer = net.createServer((sock) => {
      sock.setNoDelay(true);
      let hello: Buffer | undefined = Buffer.alloc(0);
      let target: TcpRank | undefined;
      let err = "";
      sock.on("error", (e: NodeJS.ErrnoException) => (err = e.code ?? e.message));
      sock.on("data", (d: Buffer) => {
        if (hello) {
          hello = Buffer.concat([hello, d]);
          if (hello.length < 12) return;
          const to = hello.readUInt32LE(8);
          target = hello.readUInt32LE(0) === MAGIC ? hub.comms.get(to) : undefined;
          if (!target || hello.readUInt32LE(4) !== (to - 1 + worldSize) % worldSize) return void sock.destroy();
          const rest = hello.subarray(12);
          hello = undefined;
          target.leftSock = sock;
          accepted.get(target.rank)?.();
          if (rest.length) target.left!.push(rest);
        } else target!.left!.push(d);
      });
      sock.on("close", () => target && target.peerGone((target.rank - 1 + worldSize) % worldSize, `its connection closed${err ? ` (${err})` : ""}`));
    });
    await new Promise<void>((resolve, reject) => {
      hub.dataServer.once("error", reject);
      hub.dataServer.listen(0, () => resolve());
    });
    hub.dataPort = (hub.dataServer.address() as net.AddressInfo).port;
    const deadline = Date.now() + joinTimeoutMs;
    const tables = await Promise.all(ranks.map((c) => c.join(opts.fingerprint ?? "")));
    hub.peers = tables[0];
    if (worldSize > 1) {
      await Promise.all(ranks.map((c) => c.connectRight(deadline + 30_000)));
      let t: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([...leftReady.values()]),
        new Promise<never>((_, reject) => {
          t = setTimeout(() => reject(new CommError(`tcp-ring: the ring connections did not come up within 30 s`)), 30_000);
        }),
      ]).finally(() => clearTimeout(t));
    }
    return ranks;
  } catch (e) {
    cleanup();
    throw e;
  }
}
