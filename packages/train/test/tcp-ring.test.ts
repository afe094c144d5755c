// The TCP ring communicator: bitwise equality with the in-process ring, mismatches, departures,
// timeouts and the rendezvous (join errors, blobs), with real child processes where it matters.
import { afterEach, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createLocalRing, createTcpGroup, type Communicator, type TcpCommunicator } from "@gm/train";
import { freePort } from "../../../tests/helpers/net.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const tcpModule = pathToFileURL(path.resolve(here, "../dist/comm/tcp-ring.js")).href;


/** The data every rank contributes (the same in the child script). */
function rankData(rank: number, n: number) {
  let s = (rank * 7919 + n * 31 + 1) >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 31 - 1;
  };
  return {
    f32: Float32Array.from({ length: n }, () => next() * 10),
    f64: Float64Array.from({ length: n }, () => next() * 1e6),
    b32: Float32Array.from({ length: n }, () => next()),
  };
}

const CHILD = `
const { createTcpGroup } = await import(process.env.TCP_MODULE);
const o = JSON.parse(process.argv[2]);
${rankData.toString()}
const out = (m) => process.stdout.write(JSON.stringify(m) + "\\n");
const enc = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64");
try {
  const comms = await createTcpGroup({ worldSize: o.worldSize, localRanks: o.localRanks, masterAddr: "127.0.0.1", masterPort: o.port, fingerprint: "fp", chunkElements: o.chunk, timeoutMs: o.timeoutMs });
  const c = comms[0];
  if (o.mode === "reduce") {
    const res = {};
    for (const n of o.lengths) {
      const d = rankData(c.rank, n);
      await c.allReduceMean(d.f32);
      await c.allReduceSum(d.f64);
      await c.broadcast(d.b32, 1);
      await c.barrier();
      res[n] = [enc(d.f32), enc(d.f64), enc(d.b32)];
    }
    out({ rank: c.rank, res });
    c.close();
  } else if (o.mode === "hang") {
    await c.barrier();
    out({ rank: c.rank, hanging: true });
    setInterval(() => {}, 1000);
  } else if (o.mode === "loop") {
    try {
      await c.barrier();
      for (;;) await c.allReduceMean(new Float32Array(100));
    } catch (e) {
      out({ rank: c.rank, error: e.message, name: e.name });
      c.close();
    }
  }
} catch (e) {
  out({ error: e.message });
  process.exitCode = 1;
}
`;

let script = "";
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  children.length = 0;
});

function child(args: object): { proc: ChildProcess; messages: Record<string, unknown>[]; next: () => Promise<Record<string, unknown>>; exited: Promise<number | null> } {
  if (!script) {
    script = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "gm-tcp-")), "child.mjs");
    fs.writeFileSync(script, CHILD);
  }
  const proc = spawn(process.execPath, [script, JSON.stringify(args)], { env: { ...process.env, TCP_MODULE: tcpModule }, stdio: ["ignore", "pipe", "inherit"] });
  children.push(proc);
  const messages: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  let buf = "";
  let read = 0;
  proc.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      messages.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
      while (waiters.length && read < messages.length) waiters.shift()!(messages[read++]);
    }
  });
  const next = () => new Promise<Record<string, unknown>>((resolve) => (read < messages.length ? resolve(messages[read++]) : waiters.push(resolve)));
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (c) => resolve(c)));
  return { proc, messages, next, exited };
}

const bytes = (a: Float32Array | Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64");

/** What createLocalRing computes for the same data: the reference bits. */
async function localReference(R: number, n: number, chunk: number) {
  const comms = createLocalRing(R, { chunkElements: chunk });
  const data = comms.map((c) => rankData(c.rank, n));
  await Promise.all(comms.map((c) => c.allReduceMean(data[c.rank].f32)));
  await Promise.all(comms.map((c) => c.allReduceSum(data[c.rank].f64)));
  await Promise.all(comms.map((c) => c.broadcast(data[c.rank].b32, 1)));
  return data.map((d) => [bytes(d.f32), bytes(d.f64), bytes(d.b32)]);
}

const closeAll = (cs: Communicator[]) => cs.forEach((c) => c.close());

describe("tcp-ring communicator", () => {
  it("R = 3 child processes: all-reduce mean/sum and broadcast bitwise equal to createLocalRing (lengths not divisible by 3)", async () => {
    const port = await freePort();
    const lengths = [0, 2, 1001, 4099];
    const kids = [0, 1, 2].map((r) => child({ worldSize: 3, localRanks: [r], port, chunk: 64, mode: "reduce", lengths }));
    const results = await Promise.all(kids.map((k) => k.next()));
    for (const m of results) expect(m.error).toBeUndefined();
    const byRank = new Map(results.map((m) => [m.rank as number, m.res as Record<string, string[]>]));
    for (const n of lengths) {
      // a chunk size other than the children's: chunking does not change the bits
      const ref = await localReference(3, n, 1 << 20);
      for (let r = 0; r < 3; r++) expect(byRank.get(r)![n], `rank ${r}, n ${n}`).toEqual(ref[r]);
    }
    expect(await Promise.all(kids.map((k) => k.exited))).toEqual([0, 0, 0]);
  });

  it("R = 2 in one process (two local ranks over loopback) matches createLocalRing bitwise; barrier; blobs through the master", async () => {
    const port = await freePort();
    const comms = await createTcpGroup({ worldSize: 2, localRanks: [0, 1], masterAddr: "127.0.0.1", masterPort: port, chunkElements: 5 });
    expect(comms.map((c) => [c.rank, c.worldSize, c.backend])).toEqual([[0, 2, "tcp-ring"], [1, 2, "tcp-ring"]]);
    for (const n of [1, 7, 333]) {
      const data = comms.map((c) => rankData(c.rank, n));
      await Promise.all(comms.map((c) => c.allReduceMean(data[c.rank].f32)));
      await Promise.all(comms.map((c) => c.allReduceSum(data[c.rank].f64)));
      await Promise.all(comms.map((c) => c.broadcast(data[c.rank].b32, 1)));
      const ref = await localReference(2, n, 3);
      expect(data.map((d) => [bytes(d.f32), bytes(d.f64), bytes(d.b32)])).toEqual(ref);
    }
    await Promise.all(comms.map((c) => c.barrier()));
    // a value served by one rank (later: NCCL's unique id) reaches a rank that asked first
    const got = comms[1].fetchBlob("nccl-unique-id", 5000);
    await new Promise((r) => setTimeout(r, 50));
    await comms[0].serveBlob("nccl-unique-id", new Uint8Array([1, 2, 3, 250]));
    expect(Array.from(await got)).toEqual([1, 2, 3, 250]);
    expect(Array.from(await comms[0].fetchBlob("nccl-unique-id"))).toEqual([1, 2, 3, 250]);
    await expect(comms[0].fetchBlob("never", 200)).rejects.toThrow(/no rank served it within 200 ms/);
    closeAll(comms);
  });

  it("mismatched collectives are reported on every rank, not mis-summed", async () => {
    const port = await freePort();
    const comms = await createTcpGroup({ worldSize: 2, localRanks: [0, 1], masterAddr: "127.0.0.1", masterPort: port, timeoutMs: 5000 });
    const res = await Promise.allSettled(comms.map((c) => c.allReduceMean(new Float32Array(c.rank === 1 ? 9 : 10))));
    for (const r of res) {
      expect(r.status).toBe("rejected");
      expect((r as PromiseRejectedResult).reason.name).toBe("CommError");
      expect((r as PromiseRejectedResult).reason.message).toMatch(/collective mismatch at call #0: rank [01] called allReduceMean of (9|10) Float32Array elements.*, rank [01] called allReduceMean of (9|10) Float32Array elements/);
    }
    // the group is aborted: later calls fail at once
    await expect(comms[0].barrier()).rejects.toThrow(/collective mismatch/);
    closeAll(comms);

    const port2 = await freePort();
    const c2 = await createTcpGroup({ worldSize: 2, localRanks: [0, 1], masterAddr: "127.0.0.1", masterPort: port2, timeoutMs: 5000 });
    const res2 = await Promise.allSettled(c2.map((c) => (c.rank === 0 ? c.allReduceSum(new Float64Array(4)) : c.barrier())));
    for (const r of res2) expect((r as PromiseRejectedResult).reason.message).toMatch(/collective mismatch at call #0: rank \d called (allReduceSum of 4 Float64Array elements|barrier) \(call #0\)/);
    closeAll(c2);
  });

  it("a killed child process makes the surviving ranks reject within seconds, naming the dead rank", async () => {
    const port = await freePort();
    const looping = child({ worldSize: 3, localRanks: [1], port, chunk: 1 << 20, mode: "loop", timeoutMs: 60_000 });
    const hanging = child({ worldSize: 3, localRanks: [2], port, chunk: 1 << 20, mode: "hang", timeoutMs: 60_000 });
    const [c0] = await createTcpGroup({ worldSize: 3, localRanks: [0], masterAddr: "127.0.0.1", masterPort: port, fingerprint: "fp", timeoutMs: 60_000 });
    await c0.barrier();
    expect(await hanging.next()).toMatchObject({ rank: 2, hanging: true });
    // rank 2 never joins this collective; then its process dies
    const pending = c0.allReduceMean(new Float32Array(100));
    const t0 = Date.now();
    hanging.proc.kill("SIGKILL");
    const err = await pending.then(() => undefined, (e: Error) => e);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(err?.name).toBe("CommError");
    expect(err?.message).toMatch(/^rank 2 \(127\.0\.0\.1:\d+\) left the group: /);
    await expect(c0.barrier()).rejects.toThrow(/rank 2 .* left the group/);
    const other = await looping.next();
    expect(other).toMatchObject({ rank: 1, name: "CommError" });
    expect(String(other.error)).toMatch(/rank 2 \(127\.0\.0\.1:\d+\) left the group/);
    expect(await looping.exited).toBe(0);
    c0.close();
  });

  it("a rank that stops calling collectives makes the others time out, naming it", async () => {
    const port = await freePort();
    const comms = await createTcpGroup({ worldSize: 2, localRanks: [0, 1], masterAddr: "127.0.0.1", masterPort: port, timeoutMs: 300 });
    const t0 = Date.now();
    await expect(comms[0].allReduceSum(new Float64Array(3))).rejects.toThrow(/allReduceSum \(call #0\) timed out after 300 ms on rank 0: nothing heard from rank 1 \(127\.0\.0\.1:\d+\)/);
    expect(Date.now() - t0).toBeLessThan(3000);
    await expect(comms[1].barrier()).rejects.toThrow(/timed out/);
    closeAll(comms);
  });

  it("the rendezvous: a missing rank times out naming it and the master; inconsistent processes fail together", async () => {
    const port = await freePort();
    const t0 = Date.now();
    await expect(createTcpGroup({ worldSize: 3, localRanks: [0, 1], masterAddr: "127.0.0.1", masterPort: port, joinTimeoutMs: 800 })).rejects.toThrow(
      /rendezvous failed: rendezvous at 127\.0\.0\.1:\d+ timed out after 1 s: rank 2 did not join \(joined: 0, 1\)/,
    );
    expect(Date.now() - t0).toBeLessThan(5000);
    // no master at all: the joining rank retries, then names the address
    const port2 = await freePort();
    await expect(createTcpGroup({ worldSize: 2, localRanks: [1], masterAddr: "127.0.0.1", masterPort: port2, joinTimeoutMs: 600 })).rejects.toThrow(
      new RegExp(`rank 1 could not reach the rendezvous master at 127\\.0\\.0\\.1:${port2} within 1 s.*ECONNREFUSED`),
    );
    // two processes (here: two groups) started with different runs
    const port3 = await freePort();
    const res = await Promise.allSettled([
      createTcpGroup({ worldSize: 2, localRanks: [0], masterAddr: "127.0.0.1", masterPort: port3, fingerprint: "aaa", joinTimeoutMs: 5000 }),
      new Promise((r) => setTimeout(r, 100)).then(() => createTcpGroup({ worldSize: 2, localRanks: [1], masterAddr: "127.0.0.1", masterPort: port3, fingerprint: "bbb", joinTimeoutMs: 5000 })),
    ]);
    for (const r of res) expect((r as PromiseRejectedResult).reason?.message).toMatch(/run mismatch: rank 1 .* announced run fingerprint bbb but rank 0 .* has aaa/);
    // the same rank twice
    const port4 = await freePort();
    const dup = await Promise.allSettled([
      createTcpGroup({ worldSize: 3, localRanks: [0, 1], masterAddr: "127.0.0.1", masterPort: port4, joinTimeoutMs: 5000 }),
      new Promise((r) => setTimeout(r, 100)).then(() => createTcpGroup({ worldSize: 3, localRanks: [1], masterAddr: "127.0.0.1", masterPort: port4, joinTimeoutMs: 5000 })),
    ]);
    for (const r of dup) expect((r as PromiseRejectedResult).reason?.message).toMatch(/rank 1 joined twice/);
  });
});
