/**
 * Synthetic single-cell RNA-seq data, written as an AnnData .h5ad (CELLxGENE-like obs/var, raw
 * integer UMI counts in a float32 CSR X). Deterministic for a given seed: all randomness comes from
 * seeded xoshiro128** streams (rng.ts), never Math.random, and every cell has its own stream, so the
 * output does not depend on the block size either.
 *
 * Model
 * - Genes: G genes with Ensembl-like ids ENSG999xxxxxxxx ("ENSG" + 11 digits; real Ensembl human
 *   gene ids are ENSG00000xxxxxx, so the 999 prefix never collides) and symbols SIMG00001...
 *   feature_type ~88% protein_coding, ~10% lncRNA, ~2% miRNA. Base log-abundance ~ N(0, 1.7^2),
 *   lncRNA -1.2, miRNA -2.5, and 0.5% "housekeeping" genes boosted by +2..4 (a Zipf-like heavy head).
 * - Co-expression modules: genes are randomly partitioned into M = min(64, max(4, ceil(G/256)))
 *   modules; each module has a gamma-distributed per-cell activity (mean 1, CV 0.25-0.6 per module).
 * - Cell types: K programs. Each up-regulates ~100-300 genes (scaled by (G/20000)^0.7 below 20000
 *   genes), chosen among genes ranked 2%-50% by abundance, by log fold ~ N(1.6, 0.6) (>= 0.3); the first
 *   8 of them ("markers") get +1.5 more; ~30-100 genes are down-regulated by ~ -N(1.2, 0.5).
 *   No gene may take more than 4% of a (type, batch) profile (weights capped).
 *   Types also scale the library size (log-normal sd 0.25) and have batch-dependent frequencies.
 * - Batches: B batches, each a contiguous block of cells with 2 donors; per-gene multiplicative
 *   log-normal noise (sd 0.25) per batch and a per-batch library-size shift (log sd 0.3).
 * - Per cell: type, batch, donor; library size log-normal (sd 0.45) around a calibrated scale.
 *   Counts are a negative-binomial-like mixture drawn in O(reads), not O(genes):
 *     for each module m: activity a ~ Gamma(shape_m)/shape_m, k_m ~ Poisson(E * share_m * a), where
 *     E = expected capture events of the cell and share_m the module's share of the (type, batch)
 *     profile; then the k_m events are spread over the module's genes with a precomputed alias table
 *     (Walker/Vose, one per (type, batch, module)); each event adds 1 + Geometric(0.25) UMIs
 *     (transcriptional bursting: gene-level over-dispersion on top of the module's gamma noise).
 *   Nonzeros are collected in gene order by scanning a G-bit bitmap; technical dropout then zeroes
 *   genes seen exactly once with probability 0.15.
 * - Calibration: before the run, the UMI scale is tuned on a fixed pilot panel of 1000 cells so the
 *   mean number of expressed genes per cell matches `genesPerCellTarget` (default ~2000 at 20000
 *   genes, see `defaultGenesPerCell`). The measured mean of the real run is reported.
 *
 * Output: obs columns cell_type, cell_type_ontology_term_id (real CL ids for the first six names;
 * "CL:99000NN" placeholders, not real terms, for "cell type 7" and up), assay "10x 3' v3",
 * assay_ontology_term_id EFO:0009922, donor_id, batch, is_primary_data (h5py bool; ~5% False),
 * tissue "blood", tissue_ontology_term_id UBERON:0000178, suspension_type "cell", disease "normal",
 * disease_ontology_term_id PATO:0000461, and (after X) total_counts (float32) and
 * n_genes_by_counts (int32); obs index = 10x-style barcodes "ACGT...(16)-<batch+1>", unique.
 * var: index = gene ids, feature_name (symbol), feature_type, feature_biotype "gene",
 * feature_reference "NCBITaxon:9606", feature_is_filtered (bool, all False). uns: title,
 * schema_version, organism_ontology_term_id, gm_simulation (JSON of the parameters). Empty
 * obsm/varm/obsp/varp/layers. X: CSR, float32 integer counts, int32 indices, int64 indptr, written
 * in blocks of `blockCells` rows with bounded memory, through a temporary file renamed into place.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { getLogger, tempNameFor, usageError, writeFileAtomic } from "@gm/core";
import { H5adWriter } from "../h5ad/write.js";
import { defaultGenesPerCell, FEATURE_TYPES, SimModel, STREAM } from "./model.js";
import { streamSeed, Xoshiro128 } from "./rng.js";

export { defaultGenesPerCell } from "./model.js";

export interface SimulateOptions {
  /** Number of cells (rows of X), >= 1. */
  cells: number;
  /** Number of genes (columns of X), >= 10. */
  genes: number;
  /** Number of cell types (programs), >= 1. */
  cellTypes: number;
  /** Number of batches (2 donors each), >= 1. */
  batches: number;
  /** Any safe integer. Same seed and options -> byte-identical matrix and metadata. */
  seed: number;
  /** Output path, must end in .h5ad. Parent directories are created. */
  out: string;
  /** Mean expressed genes per cell to calibrate to (default `defaultGenesPerCell(genes)`). */
  genesPerCellTarget?: number;
  /** Fraction of cells with is_primary_data = True (default 0.95). */
  primaryFraction?: number;
  /** Cells simulated and written per block (default 4096). Does not change the output. */
  blockCells?: number;
  /** gzip X (level 4). Default off: much faster to write and read. */
  compress?: boolean;
  /** Boolean storage, see h5ad/write.ts (default "enum", the h5py bool type). */
  bools?: "enum" | "int8";
  /**
   * Also write the ground-truth gene sets as GMT (one set per cell-type program: its up-regulated
   * genes, by gene id), e.g. for the pretraining gene-pair loss. Written atomically.
   */
  geneSetsOut?: string;
}

export interface SimulateSummary {
  path: string;
  cells: number;
  genes: number;
  nnz: number;
  /** Measured mean number of expressed (nonzero) genes per cell. */
  meanGenesPerCell: number;
  seconds: number;
}

export const CELL_TYPE_NAMES: readonly [string, string][] = [
  ["T cell", "CL:0000084"],
  ["B cell", "CL:0000236"],
  ["monocyte", "CL:0000576"],
  ["natural killer cell", "CL:0000623"],
  ["dendritic cell", "CL:0000451"],
  ["platelet", "CL:0000233"],
];

/** Display name and ontology id of cell type k (0-based). Ids from k = 6 on are placeholders. */
export function cellTypeName(k: number): [string, string] {
  if (k < CELL_TYPE_NAMES.length) return [CELL_TYPE_NAMES[k][0], CELL_TYPE_NAMES[k][1]];
  return [`cell type ${k + 1}`, `CL:99${String(k + 1).padStart(5, "0")}`];
}

/** Ensembl-like id and symbol of gene g (0-based). */
export function simGeneId(g: number): string {
  return `ENSG999${String(g + 1).padStart(8, "0")}`;
}
export function simGeneSymbol(g: number): string {
  return `SIMG${String(g + 1).padStart(5, "0")}`;
}

const BASES = "ACGT";
/** A 16-base barcode from a bijection of (index within batch, batch key): unique within a batch. */
export function simBarcode(index: number, key: number, batch: number): string {
  let x = (index ^ key) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  x = (x ^ (x >>> 16)) >>> 0;
  let s = "";
  for (let i = 0; i < 16; i++) s += BASES[(x >>> (30 - 2 * i)) & 3];
  return `${s}-${batch + 1}`;
}

function checkInt(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw usageError(`simulate: ${name} must be an integer in [${min}, ${max}], got ${String(v)}`);
  }
  return v;
}

/** Per-cell metadata drawn up front (small: a few bytes per cell). */
interface CellMeta {
  type: Uint16Array;
  batch: Uint16Array;
  donor: Uint16Array;
  primary: Uint8Array;
  barcodes: string[];
}

function drawCells(model: SimModel, cells: number, seed: number, primaryFraction: number): CellMeta {
  const B = model.B;
  const rng = new Xoshiro128(streamSeed(seed, STREAM.cells));
  // Contiguous batch blocks with mildly unequal sizes (every batch non-empty when cells >= B).
  const w = Array.from({ length: B }, () => Math.exp(0.15 * rng.normal()));
  const ws = w.reduce((a, b) => a + b, 0);
  const sizes = w.map((x) => Math.floor((cells * x) / ws));
  let rest = cells - sizes.reduce((a, b) => a + b, 0);
  for (let b = 0; rest > 0; b = (b + 1) % B, rest--) sizes[b]++;
  if (cells >= B) {
    for (let b = 0; b < B; b++) {
      if (sizes[b] === 0) {
        const donorB = sizes.indexOf(Math.max(...sizes));
        sizes[donorB]--;
        sizes[b]++;
      }
    }
  }
  const donorFrac = Array.from({ length: B }, () => 0.35 + 0.3 * rng.next());
  const keys = Array.from({ length: B }, (_, b) => streamSeed(seed, STREAM.barcodes, b));
  const meta: CellMeta = {
    type: new Uint16Array(cells),
    batch: new Uint16Array(cells),
    donor: new Uint16Array(cells),
    primary: new Uint8Array(cells),
    barcodes: new Array<string>(cells),
  };
  let i = 0;
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < sizes[b]; j++, i++) {
      meta.batch[i] = b;
      meta.type[i] = model.drawType(b, rng.next());
      meta.donor[i] = 2 * b + (rng.next() < donorFrac[b] ? 0 : 1);
      meta.primary[i] = rng.next() < primaryFraction ? 1 : 0;
      meta.barcodes[i] = simBarcode(j, keys[b], b);
    }
  }
  return meta;
}

function constantCategorical(n: number, value: string) {
  return { kind: "categorical" as const, codes: new Int8Array(n), categories: [value] };
}

/**
 * Simulate `cells` x `genes` counts and write them to `opts.out` (.h5ad). `onProgress` gets the
 * number of cells written so far after every block.
 */
export async function simulate(opts: SimulateOptions, onProgress?: (cellsDone: number) => void): Promise<SimulateSummary> {
  const started = performance.now();
  const cells = checkInt("cells", opts.cells, 1, 2 ** 31 - 2);
  const genes = checkInt("genes", opts.genes, 10, 2 ** 31 - 2);
  const T = checkInt("cellTypes", opts.cellTypes, 1, 65535);
  const B = checkInt("batches", opts.batches, 1, 32767);
  const seed = checkInt("seed", opts.seed, Number.MIN_SAFE_INTEGER);
  const blockCells = checkInt("blockCells", opts.blockCells ?? 4096, 1, 1 << 24);
  const target = opts.genesPerCellTarget ?? defaultGenesPerCell(genes);
  if (!(typeof target === "number" && target >= 1 && target <= 0.8 * genes)) {
    throw usageError(`simulate: genesPerCellTarget must be in [1, ${Math.floor(0.8 * genes)}] (80% of genes), got ${String(target)}`);
  }
  const primaryFraction = opts.primaryFraction ?? 0.95;
  if (!(typeof primaryFraction === "number" && primaryFraction >= 0 && primaryFraction <= 1)) {
    throw usageError(`simulate: primaryFraction must be in [0, 1], got ${String(primaryFraction)}`);
  }
  if (typeof opts.out !== "string" || !opts.out.toLowerCase().endsWith(".h5ad")) {
    throw usageError(`simulate: output path must end in .h5ad, got ${JSON.stringify(opts.out)}`);
  }
  if (T * B * genes > 150_000_000) {
    throw usageError(`simulate: cellTypes x batches x genes = ${T * B * genes} is too large (alias tables need 8 bytes each; limit 1.5e8)`);
  }
  const out = path.resolve(opts.out);
  fs.mkdirSync(path.dirname(out), { recursive: true });

  const model = new SimModel({ genes, cellTypes: T, batches: B, seed });
  const pilotMean = model.calibrate(seed, target);
  getLogger().debug({ umiScale: model.umiScale, pilotMeanGenesPerCell: pilotMean, target }, "simulate: calibrated library size");
  const meta = drawCells(model, cells, seed, primaryFraction);

  const tmp = tempNameFor(out);
  let w: H5adWriter | undefined;
  try {
    w = await H5adWriter.create(tmp, { bools: opts.bools });

    // obs (all but the per-cell count summaries, which follow X).
    const typeNames = Array.from({ length: T }, (_, k) => cellTypeName(k));
    const obs = w.beginDataFrame("obs", meta.barcodes);
    obs.addColumn("cell_type", { kind: "categorical", codes: meta.type, categories: typeNames.map((x) => x[0]) });
    obs.addColumn("cell_type_ontology_term_id", { kind: "categorical", codes: meta.type, categories: typeNames.map((x) => x[1]) });
    obs.addColumn("assay", constantCategorical(cells, "10x 3' v3"));
    obs.addColumn("assay_ontology_term_id", constantCategorical(cells, "EFO:0009922"));
    obs.addColumn("donor_id", { kind: "categorical", codes: meta.donor, categories: Array.from({ length: 2 * B }, (_, d) => `donor_${d}`) });
    obs.addColumn("batch", { kind: "categorical", codes: meta.batch, categories: Array.from({ length: B }, (_, b) => `batch${b}`) });
    obs.addColumn("is_primary_data", { kind: "bool", values: meta.primary });
    obs.addColumn("tissue", constantCategorical(cells, "blood"));
    obs.addColumn("tissue_ontology_term_id", constantCategorical(cells, "UBERON:0000178"));
    obs.addColumn("suspension_type", constantCategorical(cells, "cell"));
    obs.addColumn("disease", constantCategorical(cells, "normal"));
    obs.addColumn("disease_ontology_term_id", constantCategorical(cells, "PATO:0000461"));
    meta.barcodes = [];

    // var
    const ids = Array.from({ length: genes }, (_, g) => simGeneId(g));
    const symbols = Array.from({ length: genes }, (_, g) => simGeneSymbol(g));
    w.writeDataFrame("var", {
      index: ids,
      columns: [
        ["feature_name", { kind: "categorical", codes: Int32Array.from({ length: genes }, (_, g) => g), categories: symbols }],
        ["feature_type", { kind: "categorical", codes: model.featureType, categories: [...FEATURE_TYPES] }],
        ["feature_biotype", constantCategorical(genes, "gene")],
        ["feature_reference", constantCategorical(genes, "NCBITaxon:9606")],
        ["feature_is_filtered", { kind: "bool", values: new Uint8Array(genes) }],
      ],
    });

    for (const k of ["obsm", "varm", "obsp", "varp", "layers"]) w.writeDict(k);
    w.writeDict("uns");
    w.writeString("uns/title", `gm synthetic single-cell data (seed ${seed}, ${cells} cells x ${genes} genes, ${T} cell types, ${B} batches)`);
    w.writeString("uns/schema_version", "5.2.0");
    w.writeString("uns/organism_ontology_term_id", "NCBITaxon:9606");
    w.writeString(
      "uns/gm_simulation",
      JSON.stringify({
        generator: "gm simulate",
        seed,
        cells,
        genes,
        cellTypes: T,
        batches: B,
        genesPerCellTarget: target,
        primaryFraction,
        umiScale: Number(model.umiScale.toPrecision(6)),
        pilotMeanGenesPerCell: Number(pilotMean.toFixed(1)),
      }),
    );

    // X, block by block.
    const X = w.csr("X", { nCols: genes, compression: opts.compress ? 4 : false, validate: false });
    const totals = new Float32Array(cells);
    const nGenes = new Int32Array(cells);
    let cap = Math.max(genes, Math.ceil(blockCells * target * 1.3));
    let idx = new Int32Array(cap);
    let val = new Float32Array(cap);
    const indptr = new Float64Array(blockCells + 1);
    const rng = new Xoshiro128(0);
    let nnz = 0;
    for (let start = 0; start < cells; start += blockCells) {
      const end = Math.min(cells, start + blockCells);
      let at = 0;
      indptr[0] = 0;
      for (let c = start; c < end; c++) {
        if (at + genes > cap) {
          cap = Math.max(at + genes, Math.ceil(cap * 1.5));
          const ni = new Int32Array(cap);
          ni.set(idx.subarray(0, at));
          idx = ni;
          const nv = new Float32Array(cap);
          nv.set(val.subarray(0, at));
          val = nv;
        }
        rng.reseed(streamSeed(seed, STREAM.counts, c));
        const k = model.sampleCell(rng, meta.type[c], meta.batch[c], idx, val, at);
        at += k;
        indptr[c - start + 1] = at;
        totals[c] = model.lastTotal;
        nGenes[c] = k;
      }
      X.appendRows(indptr, idx, val, end - start);
      nnz += at;
      onProgress?.(end);
      // Let signals and timers run between blocks.
      await new Promise<void>((r) => setImmediate(r));
    }
    X.finish();

    obs.addColumn("total_counts", { kind: "number", values: totals });
    obs.addColumn("n_genes_by_counts", { kind: "number", values: nGenes });
    obs.finish();

    w.close();
    fs.renameSync(tmp, out);
    if (opts.geneSetsOut) {
      const lines = model.programs.map((genesUp, t) => [`program_${t + 1}_${cellTypeName(t)[0].replace(/\s+/g, "_")}`, "gm simulate: genes up-regulated in this cell type", ...Array.from(genesUp, (g) => simGeneId(g))].join("\t"));
      writeFileAtomic(path.resolve(opts.geneSetsOut), lines.join("\n") + "\n");
    }
    return {
      path: out,
      cells,
      genes,
      nnz,
      meanGenesPerCell: nnz / cells,
      seconds: (performance.now() - started) / 1000,
    };
  } catch (e) {
    w?.abort();
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
