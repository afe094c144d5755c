/**
 * The generative model behind `simulate` (see index.ts for the overview). Built once per run from
 * the seed; afterwards each cell is drawn from its own seeded stream in O(reads + nonzeros).
 */
import { buildAlias, streamSeed, Xoshiro128 } from "./rng.js";

/** RNG stream ids (the same seed gives unrelated streams for each purpose). */
export const STREAM = { model: 1, cells: 2, counts: 3, pilot: 4, barcodes: 5 } as const;

export const FEATURE_TYPES = ["protein_coding", "lncRNA", "miRNA"] as const;

export interface ModelConfig {
  genes: number;
  cellTypes: number;
  batches: number;
  seed: number;
}

/** Fixed shape parameters of the model (documented in index.ts). */
export const MODEL_CONSTANTS = {
  /** sd of log base abundance across genes. */
  abundanceSd: 1.7,
  /** Fraction of genes with an extra "housekeeping" boost and its range (log). */
  headFraction: 0.005,
  headBoost: [2, 4] as [number, number],
  /** lncRNA / miRNA abundance shifts (log). */
  lncShift: -1.2,
  mirShift: -2.5,
  /** Program sizes at G = 20000 (scaled by (G/20000)^0.7 below that). */
  upGenes: [100, 300] as [number, number],
  downGenes: [30, 100] as [number, number],
  /** log fold changes: up ~ N(1.6, 0.6), first 8 up genes (markers) +1.5; down ~ -N(1.2, 0.5); |lfc| >= 0.3. */
  upLfc: [1.6, 0.6] as [number, number],
  markerGenes: 8,
  markerBoost: 1.5,
  downLfc: [1.2, 0.5] as [number, number],
  /** Largest share of a (type, batch) profile one gene may take (weights capped before normalising). */
  maxGeneShare: 0.04,
  /** Per-batch per-gene log effect sd, per-batch and per-type library-size log sd. */
  batchGeneSd: 0.25,
  batchLibSd: 0.3,
  typeLibSd: 0.25,
  /** Cell-type composition: global log weight sd, per-batch log weight sd. */
  typeWeightSd: 0.8,
  batchTypeWeightSd: 0.3,
  /** Per-cell library size log sd. */
  libSd: 0.45,
  /** Module gamma activity: coefficient of variation drawn uniformly per module. */
  moduleCv: [0.25, 0.6] as [number, number],
  /** Burst continuation probability: each captured molecule event adds 1 + Geometric(q) UMIs. */
  burstQ: 0.25,
  /** Probability that a gene seen exactly once in a cell is dropped (technical dropout). */
  dropout1: 0.15,
};

const TWO_M32 = 1 / 4294967296;

/** Default genes-per-cell target: ~2000 at G >= 20000, scaled as (G/20000)^0.75 below, at most G/2. */
export function defaultGenesPerCell(genes: number): number {
  const t = genes >= 20000 ? 2000 : 2000 * Math.pow(genes / 20000, 0.75);
  return Math.max(1, Math.min(Math.round(t), Math.floor(genes / 2)));
}

export function moduleCount(genes: number): number {
  return Math.min(genes, 64, Math.max(4, Math.ceil(genes / 256)));
}

export class SimModel {
  readonly G: number;
  readonly T: number;
  readonly B: number;
  readonly M: number;
  /** 0 protein_coding, 1 lncRNA, 2 miRNA per gene. */
  readonly featureType: Uint8Array;
  /** Module m holds moduleGenes[moduleStart[m] .. moduleStart[m+1]), ascending gene index. */
  readonly moduleStart: Int32Array;
  readonly moduleGenes: Int32Array;
  /** Gamma shape of each module's per-cell activity (mean 1, CV = 1/sqrt(shape)). */
  readonly moduleShape: Float64Array;
  /** Profile p = type * B + batch: module shares share[p*M + m] (sum 1 over m). */
  readonly share: Float64Array;
  /** Alias tables per profile, laid out like moduleGenes at offset p*G. */
  readonly prob: Float32Array;
  readonly alias: Int32Array;
  readonly typeLib: Float64Array;
  readonly batchLib: Float64Array;
  /** Cumulative type weights per batch: typeCdf[b*T + t]. */
  readonly typeCdf: Float64Array;
  /** Up-regulated genes of each type (first `markerGenes` are the strongest); chosen among genes
   * ranked 2%-50% by base abundance (so changes are visible but the top genes stay housekeeping). */
  readonly programs: Int32Array[];
  /** Expected UMIs per cell before type/batch/cell factors; set by `calibrate`. */
  umiScale = 5000;

  private readonly counts: Int32Array;
  private readonly bits: Int32Array;
  private readonly burstU32: number;
  private readonly dropU32: number;
  private readonly burstMean: number;

  constructor(cfg: ModelConfig) {
    const C = MODEL_CONSTANTS;
    const G = (this.G = cfg.genes);
    const T = (this.T = cfg.cellTypes);
    const B = (this.B = cfg.batches);
    const M = (this.M = moduleCount(G));
    const rng = new Xoshiro128(streamSeed(cfg.seed, STREAM.model));

    // Genes: feature type and base log abundance (log-normal body plus a heavy "housekeeping" head).
    this.featureType = new Uint8Array(G);
    const base = new Float64Array(G);
    for (let g = 0; g < G; g++) {
      const u = rng.next();
      const ft = u < 0.88 ? 0 : u < 0.98 ? 1 : 2;
      this.featureType[g] = ft;
      let l = C.abundanceSd * rng.normal();
      if (ft === 1) l += C.lncShift;
      else if (ft === 2) l += C.mirShift;
      if (rng.next() < C.headFraction) l += C.headBoost[0] + (C.headBoost[1] - C.headBoost[0]) * rng.next();
      base[g] = l;
    }

    // Modules: a random partition into M near-equal groups.
    const perm = new Int32Array(G);
    for (let i = 0; i < G; i++) perm[i] = i;
    shuffle(perm, rng);
    const moduleOf = new Int32Array(G);
    for (let i = 0; i < G; i++) moduleOf[perm[i]] = i % M;
    this.moduleStart = new Int32Array(M + 1);
    for (let g = 0; g < G; g++) this.moduleStart[moduleOf[g] + 1]++;
    for (let m = 0; m < M; m++) this.moduleStart[m + 1] += this.moduleStart[m];
    this.moduleGenes = new Int32Array(G);
    const fill = this.moduleStart.slice(0, M);
    for (let g = 0; g < G; g++) this.moduleGenes[fill[moduleOf[g]]++] = g;
    this.moduleShape = new Float64Array(M);
    for (let m = 0; m < M; m++) {
      const cv = C.moduleCv[0] + (C.moduleCv[1] - C.moduleCv[0]) * rng.next();
      this.moduleShape[m] = 1 / (cv * cv);
    }

    // Cell-type programs over genes expressed above the median (so the changes are visible).
    const order = Array.from({ length: G }, (_, i) => i).sort((a, b) => base[b] - base[a] || a - b);
    const candidates = Int32Array.from(order.slice(Math.floor(G * 0.02), Math.max(Math.floor(G * 0.02) + 1, Math.ceil(G / 2))));
    const sc = Math.min(1, Math.pow(G / 20000, 0.7));
    const lfc = new Float64Array(T * G);
    this.programs = [];
    for (let t = 0; t < T; t++) {
      const nUp = clampInt(Math.round(uniform(rng, C.upGenes) * sc), 3, Math.floor(candidates.length / 3));
      const nDown = clampInt(Math.round(uniform(rng, C.downGenes) * sc), 1, Math.floor(candidates.length / 6));
      const picks = sampleWithoutReplacement(candidates, nUp + nDown, rng);
      const up = picks.slice(0, nUp);
      for (let i = 0; i < nUp; i++) {
        let e = Math.max(0.3, C.upLfc[0] + C.upLfc[1] * rng.normal());
        if (i < C.markerGenes) e += C.markerBoost;
        lfc[t * G + up[i]] += e;
      }
      for (let i = nUp; i < nUp + nDown; i++) lfc[t * G + picks[i]] -= Math.max(0.3, C.downLfc[0] + C.downLfc[1] * rng.normal());
      this.programs.push(up);
    }

    // Batches: per-gene multiplicative noise and a library-size shift; per-type library factors.
    const batchEff = new Float64Array(B * G);
    for (let i = 0; i < B * G; i++) batchEff[i] = C.batchGeneSd * rng.normal();
    this.batchLib = new Float64Array(B);
    for (let b = 0; b < B; b++) this.batchLib[b] = Math.exp(C.batchLibSd * rng.normal());
    this.typeLib = new Float64Array(T);
    for (let t = 0; t < T; t++) this.typeLib[t] = Math.exp(C.typeLibSd * rng.normal());

    // Composition: global type weights times a per-batch perturbation.
    const gw = new Float64Array(T);
    for (let t = 0; t < T; t++) gw[t] = C.typeWeightSd * rng.normal();
    gw.sort().reverse(); // type 0 ("T cell") is the most frequent overall, as in blood
    this.typeCdf = new Float64Array(B * T);
    for (let b = 0; b < B; b++) {
      let s = 0;
      for (let t = 0; t < T; t++) {
        s += Math.exp(gw[t] + C.batchTypeWeightSd * rng.normal());
        this.typeCdf[b * T + t] = s;
      }
      for (let t = 0; t < T; t++) this.typeCdf[b * T + t] /= s;
      this.typeCdf[b * T + T - 1] = 1;
    }

    // Alias tables and module shares for every (type, batch) profile.
    const P = T * B;
    this.share = new Float64Array(P * M);
    this.prob = new Float32Array(P * G);
    this.alias = new Int32Array(P * G);
    const w = new Float64Array(G);
    const mw = new Float64Array(Math.max(...Array.from({ length: M }, (_, m) => this.moduleStart[m + 1] - this.moduleStart[m])));
    const work = { small: new Int32Array(mw.length), large: new Int32Array(mw.length), scaled: new Float64Array(mw.length) };
    for (let t = 0; t < T; t++) {
      for (let b = 0; b < B; b++) {
        const p = t * B + b;
        let total = 0;
        for (let g = 0; g < G; g++) {
          w[g] = Math.exp(base[g] + lfc[t * G + g] + batchEff[b * G + g]);
          total += w[g];
        }
        // No single gene takes more than maxGeneShare of a profile (real top genes: a few %).
        const cap = C.maxGeneShare * total;
        for (let g = 0; g < G; g++) {
          if (w[g] > cap) {
            total -= w[g] - cap;
            w[g] = cap;
          }
        }
        for (let m = 0; m < M; m++) {
          const s0 = this.moduleStart[m];
          const n = this.moduleStart[m + 1] - s0;
          let ms = 0;
          for (let j = 0; j < n; j++) {
            mw[j] = w[this.moduleGenes[s0 + j]];
            ms += mw[j];
          }
          this.share[p * M + m] = ms / total;
          buildAlias(mw, n, this.prob, this.alias, p * G + s0, this.moduleGenes, s0, work);
        }
      }
    }

    this.counts = new Int32Array(G);
    this.bits = new Int32Array(Math.ceil(G / 32));
    this.burstU32 = Math.floor(C.burstQ * 4294967296);
    this.dropU32 = Math.floor(C.dropout1 * 4294967296);
    this.burstMean = 1 / (1 - C.burstQ);
  }

  /** Draw a type for a cell of batch b from a uniform u in [0, 1). */
  drawType(b: number, u: number): number {
    const T = this.T;
    const off = b * T;
    for (let t = 0; t < T - 1; t++) if (u < this.typeCdf[off + t]) return t;
    return T - 1;
  }

  /**
   * Draw one cell's counts with `rng` (the cell's own stream) and write its nonzeros, ascending by
   * gene, to idx/val from `at`. Returns the number of nonzeros; `lastTotal` gets the UMI total.
   * Requires idx/val to have room for G entries from `at`.
   */
  sampleCell(rng: Xoshiro128, type: number, batch: number, idx: Int32Array, val: Float32Array, at: number, scale = this.umiScale): number {
    const C = MODEL_CONSTANTS;
    const G = this.G;
    const M = this.M;
    const p = type * this.B + batch;
    // Library size (log-normal, mean-preserving) -> expected capture events (bursts).
    const z = rng.normal();
    const umis = scale * this.typeLib[type] * this.batchLib[batch] * Math.exp(C.libSd * z - 0.5 * C.libSd * C.libSd);
    const events = umis / this.burstMean;
    const counts = this.counts;
    const bits = this.bits;
    const prob = this.prob;
    const alias = this.alias;
    const genes = this.moduleGenes;
    const burst = this.burstU32;
    const pOff = p * G;
    for (let m = 0; m < M; m++) {
      const shape = this.moduleShape[m];
      const act = rng.gamma(shape) / shape;
      const k = rng.poisson(events * this.share[p * M + m] * act);
      if (k === 0) continue;
      const s0 = this.moduleStart[m];
      const n = this.moduleStart[m + 1] - s0;
      const f = n * TWO_M32;
      const off = pOff + s0;
      for (let i = 0; i < k; i++) {
        const v = rng.nextU32() * f;
        const j = v | 0;
        const g = v - j < prob[off + j] ? genes[s0 + j] : alias[off + j];
        let c = counts[g];
        if (c === 0) bits[g >>> 5] |= 1 << (g & 31);
        c++;
        while (rng.nextU32() < burst) c++;
        counts[g] = c;
      }
    }
    // Collect in gene order (bitmap scan), applying technical dropout to singletons.
    const drop = this.dropU32;
    let out = at;
    let total = 0;
    const W = bits.length;
    for (let wi = 0; wi < W; wi++) {
      let x = bits[wi];
      if (x === 0) continue;
      bits[wi] = 0;
      while (x !== 0) {
        const low = x & -x;
        const g = (wi << 5) | (31 - Math.clz32(low));
        x ^= low;
        const c = counts[g];
        counts[g] = 0;
        if (c === 1 && rng.nextU32() < drop) continue;
        idx[out] = g;
        val[out] = c;
        out++;
        total += c;
      }
    }
    this.lastTotal = total;
    return out - at;
  }
  lastTotal = 0;

  /**
   * Set `umiScale` so that the mean number of expressed genes per cell is about `target`, by
   * simulating a fixed pilot panel of cells (own RNG stream, common random numbers across
   * iterations) and a secant search on log scale. Returns the pilot's mean at the final scale.
   */
  calibrate(seed: number, target: number, pilotCells = 1000): number {
    const G = this.G;
    const idx = new Int32Array(G);
    const val = new Float32Array(G);
    const pr = new Xoshiro128(streamSeed(seed, STREAM.pilot, 0xffffffff));
    const types = new Int32Array(pilotCells);
    const batches = new Int32Array(pilotCells);
    for (let i = 0; i < pilotCells; i++) {
      batches[i] = pr.int(this.B);
      types[i] = this.drawType(batches[i], pr.next());
    }
    const rng = new Xoshiro128(0);
    const measure = (scale: number): number => {
      let nnz = 0;
      for (let i = 0; i < pilotCells; i++) {
        rng.reseed(streamSeed(seed, STREAM.pilot, i));
        nnz += this.sampleCell(rng, types[i], batches[i], idx, val, 0, scale);
      }
      return nnz / pilotCells;
    };
    const lt = Math.log(target);
    let x0 = Math.log(Math.max(10, 4 * target));
    let m0 = measure(Math.exp(x0));
    let f0 = Math.log(Math.max(m0, 0.5)) - lt;
    let best = { x: x0, m: m0, err: Math.abs(f0) };
    let x1 = x0 - f0 / 0.6;
    for (let iter = 0; iter < 25 && best.err > 0.003; iter++) {
      x1 = Math.min(Math.max(x1, x0 - 3), x0 + 3, Math.log(1e9));
      const m1 = measure(Math.exp(x1));
      const f1 = Math.log(Math.max(m1, 0.5)) - lt;
      if (Math.abs(f1) < best.err) best = { x: x1, m: m1, err: Math.abs(f1) };
      let slope = (f1 - f0) / (x1 - x0);
      if (!(slope > 0.05) || !Number.isFinite(slope)) slope = 0.6;
      x0 = x1;
      f0 = f1;
      x1 = x1 - f1 / slope;
      if (Math.abs(x1 - x0) < 1e-6) break;
    }
    this.umiScale = Math.exp(best.x);
    return best.m;
  }
}

function uniform(rng: Xoshiro128, [a, b]: [number, number]): number {
  return a + (b - a) * rng.next();
}

function clampInt(x: number, lo: number, hi: number): number {
  return Math.max(Math.min(lo, hi), Math.min(x, hi));
}

function shuffle(a: Int32Array, rng: Xoshiro128): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

/** k distinct elements of `from` (partial Fisher-Yates on a copy). */
function sampleWithoutReplacement(from: Int32Array, k: number, rng: Xoshiro128): Int32Array {
  const a = from.slice();
  const n = Math.min(k, a.length);
  for (let i = 0; i < n; i++) {
    const j = i + rng.int(a.length - i);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a.slice(0, n);
}
