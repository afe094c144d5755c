import { usageError } from "@gm/core";

/** Distributed-run flags of `gm pretrain`, as parsed numbers/strings (per node, torchrun-style). */
export interface TopologyFlags {
  /** --ranks N: CPU ranks in this process (default 1). */
  ranks?: number;
  /** --gpus N: one rank per GPU on this node. */
  gpus?: number;
  nnodes?: number;
  nodeRank?: number;
  masterAddr?: string;
  masterPort?: number;
  /**
   * Which launcher's environment to read. Default "auto": torchrun's env (RANK/WORLD_SIZE) when set,
   * else Slurm's when SLURM_NTASKS > 1. "slurm" reads Slurm's env even for a single task; "gm"
   * ignores both.
   */
  launcher?: "auto" | "gm" | "torchrun" | "slurm";
}

export interface Topology {
  worldSize: number;
  nnodes: number;
  nodeRank: number;
  ranksPerNode: number;
  /** The global ranks this process hosts. */
  localRanks: number[];
  /** This process's first rank's index on its node (LOCAL_RANK, SLURM_LOCALID; 0 for gm's own launch): its GPU. */
  localIndex: number;
  masterAddr: string;
  masterPort: number;
  /** "cuda" when --gpus is given. */
  device: "cpu" | "cuda";
  launcher: "gm" | "torchrun" | "slurm";
  /** True when the world spans more than this process. */
  multiProcess: boolean;
}

export const DEFAULT_MASTER_PORT = 29500;

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : word.endsWith("s") ? "es" : "s"}`;

function checkFlagInt(name: string, v: number | undefined, min: number): void {
  if (v === undefined) return;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min)
    throw usageError(`${name} must be ${min === 0 ? "a non-negative" : "a positive"} integer (got ${String(v)})`);
}

function checkPort(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 1 || v > 65535) throw usageError(`${what} must be a port number in 1..65535 (got ${String(v)})`);
}

type Env = NodeJS.ProcessEnv;

function envStr(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

function envInt(env: Env, name: string, min: number): number | undefined {
  const s = envStr(env, name);
  if (s === undefined) return undefined;
  const v = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(v) || v < min)
    throw usageError(`${name}=${s} in the environment must be ${min === 0 ? "a non-negative" : "a positive"} integer`);
  return v;
}

function envPort(env: Env): number | undefined {
  const s = envStr(env, "MASTER_PORT");
  if (s === undefined) return undefined;
  const v = /^\d+$/.test(s) ? Number(s) : NaN;
  checkPort(`MASTER_PORT=${s} in the environment`, v);
  return v;
}

/** The first host of a Slurm node list: "node[01-04]" → "node01", "a,b" → "a", "gpu[3,5-7],cpu1" → "gpu3". */
export function firstSlurmHost(nodelist: string): string | undefined {
  const s = nodelist.trim();
  if (!s) return undefined;
  let depth = 0;
  let end = s.length;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "[") depth++;
    else if (s[i] === "]") depth--;
    else if (s[i] === "," && depth === 0) {
      end = i;
      break;
    }
  }
  const first = s.slice(0, end);
  const m = /^([^[]*)\[([^\]]*)\](.*)$/.exec(first);
  if (!m) return first || undefined;
  const lead = m[2].split(",")[0].split("-")[0].trim(); // keeps zero padding: "01-04" → "01"
  return `${m[1]}${lead}${m[3].replace(/\[.*$/, "")}` || undefined;
}

/** SLURM_TASKS_PER_NODE "4(x2)" / "4" / "4,4" → 4; uneven layouts ("2,1") are an error. */
function parseTasksPerNode(name: string, s: string): number {
  const counts: number[] = [];
  for (const part of s.split(",")) {
    const m = /^\s*(\d+)\s*(?:\(x(\d+)\))?\s*$/.exec(part);
    if (!m) throw usageError(`${name}=${s} in the environment is not a Slurm tasks-per-node list (like 4 or 4(x2))`);
    counts.push(Number(m[1]));
  }
  if (counts.some((c) => c !== counts[0]) || counts[0] < 1)
    throw usageError(`${name}=${s}: data parallelism needs the same number of ranks (at least 1) on every node`);
  return counts[0];
}

interface EnvWorld {
  launcher: "torchrun" | "slurm";
  worldSize: number;
  rank: number;
  localRank: number;
  ranksPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr?: string;
  masterPort?: number;
  /** How the env spelled these, for messages. */
  src: { world: string; perNode: string; nnodes: string; nodeRank: string };
}

function torchrunWorld(env: Env, nnodesFlag: number | undefined): EnvWorld {
  const rank = envInt(env, "RANK", 0);
  const worldSize = envInt(env, "WORLD_SIZE", 1);
  if (rank === undefined || worldSize === undefined)
    throw usageError(`torchrun environment is incomplete: RANK and WORLD_SIZE must both be set (RANK=${env.RANK ?? "unset"}, WORLD_SIZE=${env.WORLD_SIZE ?? "unset"})`);
  if (rank >= worldSize) throw usageError(`RANK=${rank} must be less than WORLD_SIZE=${worldSize}`);
  let ranksPerNode = envInt(env, "LOCAL_WORLD_SIZE", 1);
  const perNodeSrc = ranksPerNode === undefined ? "" : `LOCAL_WORLD_SIZE=${ranksPerNode}`;
  if (ranksPerNode === undefined) {
    if (nnodesFlag !== undefined && worldSize % nnodesFlag !== 0)
      throw usageError(`--nnodes ${nnodesFlag} does not divide WORLD_SIZE=${worldSize}`);
    ranksPerNode = worldSize / (nnodesFlag ?? 1);
  }
  if (worldSize % ranksPerNode !== 0)
    throw usageError(`WORLD_SIZE=${worldSize} is not a multiple of LOCAL_WORLD_SIZE=${ranksPerNode}; every node must host the same number of ranks`);
  const localRank = envInt(env, "LOCAL_RANK", 0) ?? rank % ranksPerNode;
  if (localRank >= ranksPerNode) throw usageError(`LOCAL_RANK=${localRank} must be less than LOCAL_WORLD_SIZE=${ranksPerNode}`);
  const nnodes = worldSize / ranksPerNode;
  const groupRank = envInt(env, "GROUP_RANK", 0);
  const nodeRank = groupRank ?? Math.floor(rank / ranksPerNode);
  if (nodeRank >= nnodes) throw usageError(`GROUP_RANK=${nodeRank} must be less than the number of nodes (${nnodes})`);
  return {
    launcher: "torchrun",
    worldSize,
    rank,
    localRank,
    ranksPerNode,
    nnodes,
    nodeRank,
    masterAddr: envStr(env, "MASTER_ADDR"),
    masterPort: envPort(env),
    src: {
      world: `WORLD_SIZE=${worldSize}`,
      perNode: perNodeSrc || `WORLD_SIZE=${worldSize}`,
      nnodes: perNodeSrc ? `WORLD_SIZE=${worldSize} / LOCAL_WORLD_SIZE=${ranksPerNode} = ${plural(nnodes, "node")}` : `${plural(nnodes, "node")}`,
      nodeRank: groupRank !== undefined ? `GROUP_RANK=${groupRank}` : `RANK=${rank} / ${ranksPerNode} ranks per node = node ${nodeRank}`,
    },
  };
}

function slurmWorld(env: Env): EnvWorld {
  const worldSize = envInt(env, "SLURM_NTASKS", 1);
  if (worldSize === undefined) throw usageError(`the Slurm environment is not set (SLURM_NTASKS is missing); run under srun or drop --launcher slurm`);
  const rank = envInt(env, "SLURM_PROCID", 0);
  if (rank === undefined) throw usageError(`SLURM_NTASKS=${worldSize} is set but SLURM_PROCID is not; launch each rank with srun`);
  if (rank >= worldSize) throw usageError(`SLURM_PROCID=${rank} must be less than SLURM_NTASKS=${worldSize}`);
  let nnodes = envInt(env, "SLURM_NNODES", 1) ?? envInt(env, "SLURM_JOB_NUM_NODES", 1);
  const perNodeName = envStr(env, "SLURM_NTASKS_PER_NODE") !== undefined ? "SLURM_NTASKS_PER_NODE" : "SLURM_TASKS_PER_NODE";
  const perNodeStr = envStr(env, perNodeName);
  let ranksPerNode = perNodeStr === undefined ? undefined : parseTasksPerNode(perNodeName, perNodeStr);
  if (nnodes === undefined) nnodes = ranksPerNode !== undefined ? Math.max(1, Math.floor(worldSize / ranksPerNode)) : 1;
  if (ranksPerNode === undefined) {
    if (worldSize % nnodes !== 0)
      throw usageError(`SLURM_NTASKS=${worldSize} is not a multiple of SLURM_NNODES=${nnodes}; data parallelism needs the same number of ranks on every node`);
    ranksPerNode = worldSize / nnodes;
  }
  if (nnodes * ranksPerNode !== worldSize)
    throw usageError(`SLURM_NTASKS=${worldSize} does not equal SLURM_NNODES=${nnodes} × ${perNodeName}=${ranksPerNode}`);
  const localRank = envInt(env, "SLURM_LOCALID", 0) ?? rank % ranksPerNode;
  if (localRank >= ranksPerNode) throw usageError(`SLURM_LOCALID=${localRank} must be less than the ${ranksPerNode} tasks per node`);
  const nodeId = envInt(env, "SLURM_NODEID", 0);
  const nodeRank = nodeId ?? Math.floor(rank / ranksPerNode);
  if (nodeRank >= nnodes) throw usageError(`SLURM_NODEID=${nodeRank} must be less than SLURM_NNODES=${nnodes}`);
  const nodelist = envStr(env, "SLURM_JOB_NODELIST") ?? envStr(env, "SLURM_NODELIST");
  return {
    launcher: "slurm",
    worldSize,
    rank,
    localRank,
    ranksPerNode,
    nnodes,
    nodeRank,
    masterAddr: envStr(env, "MASTER_ADDR") ?? (nodelist ? firstSlurmHost(nodelist) : undefined),
    masterPort: envPort(env),
    src: {
      world: `SLURM_NTASKS=${worldSize}`,
      perNode: `${ranksPerNode} Slurm tasks per node`,
      nnodes: `SLURM_NNODES=${nnodes}`,
      nodeRank: nodeId !== undefined ? `SLURM_NODEID=${nodeId}` : `node ${nodeRank}`,
    },
  };
}

function hasTorchrunEnv(env: Env): boolean {
  return envStr(env, "RANK") !== undefined || envStr(env, "WORLD_SIZE") !== undefined;
}

function hasSlurmWorld(env: Env): boolean {
  const s = envStr(env, "SLURM_NTASKS");
  return s !== undefined && /^\d+$/.test(s) && Number(s) > 1;
}

/**
 * The data-parallel world of this process, from the flags and the launcher's environment.
 * Precedence: explicit flags > torchrun env (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
 * GROUP_RANK, MASTER_ADDR, MASTER_PORT) > Slurm env (only when SLURM_NTASKS > 1, or with
 * `launcher: "slurm"`). A flag that contradicts the shape the environment describes (world size,
 * nodes, node rank, ranks per node) is an error; --master-addr/--master-port override the env.
 * Every problem is a usageError with one line.
 */
export function resolveTopology(flags: TopologyFlags, env: NodeJS.ProcessEnv = process.env): Topology {
  checkFlagInt("--ranks", flags.ranks, 1);
  checkFlagInt("--gpus", flags.gpus, 1);
  checkFlagInt("--nnodes", flags.nnodes, 1);
  checkFlagInt("--node-rank", flags.nodeRank, 0);
  if (flags.masterPort !== undefined) checkPort("--master-port", flags.masterPort);
  if (flags.masterAddr !== undefined && flags.masterAddr.trim() === "") throw usageError(`--master-addr must not be empty`);
  if (flags.ranks !== undefined && flags.gpus !== undefined)
    throw usageError(`--ranks and --gpus cannot be combined: --ranks runs CPU ranks in this process, --gpus one rank per GPU`);
  const launcherFlag = flags.launcher ?? "auto";
  if (!["auto", "gm", "torchrun", "slurm"].includes(launcherFlag))
    throw usageError(`--launcher must be auto, gm, torchrun or slurm (got ${String(launcherFlag)})`);
  const device: Topology["device"] = flags.gpus !== undefined ? "cuda" : "cpu";
  const flagAddr = flags.masterAddr?.trim();

  let w: EnvWorld | undefined;
  if (launcherFlag === "torchrun" || (launcherFlag === "auto" && hasTorchrunEnv(env))) w = torchrunWorld(env, flags.nnodes);
  else if (launcherFlag === "slurm" || (launcherFlag === "auto" && hasSlurmWorld(env))) w = slurmWorld(env);

  if (!w) {
    const nnodes = flags.nnodes ?? 1;
    const nodeRank = flags.nodeRank ?? 0;
    if (nodeRank >= nnodes) throw usageError(`--node-rank ${nodeRank} must be less than --nnodes ${nnodes}`);
    const ranksPerNode = flags.ranks ?? flags.gpus ?? 1;
    const masterAddr = flagAddr ?? envStr(env, "MASTER_ADDR") ?? (nnodes > 1 ? undefined : "127.0.0.1");
    if (masterAddr === undefined) throw usageError(`--master-addr is required with --nnodes ${nnodes} (the address of node 0, reachable from every node)`);
    const masterPort = flags.masterPort ?? envPort(env) ?? DEFAULT_MASTER_PORT;
    return {
      worldSize: nnodes * ranksPerNode,
      nnodes,
      nodeRank,
      ranksPerNode,
      localRanks: Array.from({ length: ranksPerNode }, (_, i) => nodeRank * ranksPerNode + i),
      localIndex: 0,
      masterAddr,
      masterPort,
      device,
      launcher: "gm",
      multiProcess: nnodes > 1,
    };
  }

  // The launcher started one process per rank: check the flags against the shape it describes.
  const by = w.launcher === "torchrun" ? "torchrun" : "Slurm";
  if (flags.nnodes !== undefined && flags.nnodes !== w.nnodes)
    throw usageError(`--nnodes ${flags.nnodes} contradicts the ${by} environment (${w.src.nnodes}); drop the flag or fix the launcher`);
  if (flags.nodeRank !== undefined && flags.nodeRank !== w.nodeRank)
    throw usageError(`--node-rank ${flags.nodeRank} contradicts the ${by} environment (${w.src.nodeRank}); drop the flag or fix the launcher`);
  if (flags.ranks !== undefined && flags.ranks !== 1)
    throw usageError(`--ranks ${flags.ranks} contradicts the ${by} environment: a process launched by ${by} hosts exactly one rank (${w.src.world}); drop --ranks`);
  if (flags.gpus !== undefined && flags.gpus !== w.ranksPerNode)
    throw usageError(`--gpus ${flags.gpus} contradicts the ${by} environment (${w.src.perNode}): one rank per GPU means --gpus ${w.ranksPerNode}`);
  const masterAddr = flagAddr ?? w.masterAddr ?? (w.nnodes > 1 ? undefined : "127.0.0.1");
  if (masterAddr === undefined)
    throw usageError(`a master address is required for ${plural(w.nnodes, "node")}: set MASTER_ADDR or pass --master-addr (the address of node 0)`);
  return {
    worldSize: w.worldSize,
    nnodes: w.nnodes,
    nodeRank: w.nodeRank,
    ranksPerNode: w.ranksPerNode,
    localRanks: [w.rank],
    localIndex: w.localRank,
    masterAddr,
    masterPort: flags.masterPort ?? w.masterPort ?? DEFAULT_MASTER_PORT,
    device,
    launcher: w.launcher,
    multiProcess: w.worldSize > 1,
  };
}

/** Number of OS processes the world consists of. */
function processCount(t: Topology): number {
  return Math.max(1, Math.round(t.worldSize / Math.max(1, t.localRanks.length)));
}

function rankList(rs: number[]): string {
  if (rs.length === 0) return "none";
  const contiguous = rs.every((r, i) => i === 0 || r === rs[i - 1] + 1);
  if (rs.length === 1) return `rank ${rs[0]}`;
  return contiguous ? `ranks ${rs[0]}-${rs[rs.length - 1]}` : `ranks ${rs.join(",")}`;
}

/** One line for the log, e.g. "data parallel: 8 ranks = 2 nodes × 4 cpu ranks, node 0 hosts ranks 0-3 (launcher gm, master 10.0.0.1:29500)". */
export function describeTopology(t: Topology): string {
  const kind = t.device === "cuda" ? "gpu" : "cpu";
  if (t.worldSize === 1) return `data parallel: 1 ${kind} rank, single process (launcher ${t.launcher})`;
  const shape = t.nnodes > 1 ? `${plural(t.nnodes, "node")} × ${plural(t.ranksPerNode, `${kind} rank`)}` : `1 node × ${plural(t.ranksPerNode, `${kind} rank`)}`;
  const where = t.multiProcess
    ? `${plural(processCount(t), "process")}, this one (node ${t.nodeRank}) hosts ${rankList(t.localRanks)}; master ${t.masterAddr}:${t.masterPort}`
    : `in this process`;
  return `data parallel: ${plural(t.worldSize, "rank")} = ${shape}, ${where} (launcher ${t.launcher})`;
}

/** What this machine's addon offers for GPU ranks (the CLI reads it from the native module). */
export interface GpuAvailability {
  /** "cuda", "emulated", or undefined: no GPU backend in this build. */
  backend?: string;
  /** GPUs visible to this process. */
  count: number;
  /** Why there is no GPU backend (the build's reason), for the message. */
  reason?: string;
}

/**
 * Refuses worlds this machine cannot run: GPU ranks without a GPU backend, or more GPUs per node than
 * this process sees. CPU worlds run in one process (local ring) or across processes and nodes (TCP).
 */
export function assertRunnable(t: Topology, gpus?: GpuAvailability): void {
  if (t.device !== "cuda") return;
  const cpu = `; on CPU run the ranks with --ranks ${t.ranksPerNode}`;
  if (!gpus?.backend) throw usageError(`--gpus ${t.ranksPerNode} needs the CUDA backend, which this build lacks (${gpus?.reason ?? "see gm doctor"})${cpu}`);
  if (gpus.count < 1) throw usageError(`--gpus ${t.ranksPerNode}: this process sees no GPU (CUDA_VISIBLE_DEVICES, the driver; gm doctor shows what the CUDA runtime reports)${cpu}`);
  const need = t.launcher === "gm" ? t.ranksPerNode : t.localIndex + 1;
  if (gpus.count < need)
    throw usageError(t.launcher === "gm"
      ? `--gpus ${t.ranksPerNode} but this node has ${gpus.count} visible GPU${gpus.count === 1 ? "" : "s"}; use --gpus ${gpus.count}`
      : `this rank's local index is ${t.localIndex} but the process sees ${gpus.count} GPU${gpus.count === 1 ? "" : "s"}; one rank per GPU`);
}

/** One worker process of a GPU launch: its environment is torchrun's, so it resolves as one rank. */
export interface GpuWorker {
  rank: number;
  localRank: number;
  env: Record<string, string>;
}

/**
 * How GPU ranks start on this node. Under torchrun or Slurm this process is one rank on GPU
 * `localIndex`. gm's own launch (`--gpus N`, with or without --nnodes) of more than one rank starts
 * one worker per GPU (one process per GPU: one CUDA context and NCCL rank each, a crash confined to
 * its process, and the same path as torchrun's) and waits for them.
 */
export function gpuLaunch(t: Topology): { spawn: false; ordinal: number } | { spawn: true; workers: GpuWorker[] } {
  if (t.launcher !== "gm" || t.worldSize === 1) return { spawn: false, ordinal: t.localIndex };
  return {
    spawn: true,
    workers: t.localRanks.map((rank, localRank) => ({
      rank,
      localRank,
      env: {
        RANK: String(rank),
        WORLD_SIZE: String(t.worldSize),
        LOCAL_RANK: String(localRank),
        LOCAL_WORLD_SIZE: String(t.ranksPerNode),
        GROUP_RANK: String(t.nodeRank),
        MASTER_ADDR: t.masterAddr,
        MASTER_PORT: String(t.masterPort),
      },
    })),
  };
}
