// InfoNCE gene-pair loss (genemamba-model.md §7) and the pair-file loaders.
// The reference fixture is written by scripts/reference/make_infonce_fixture.py (PyTorch float64 autograd).
import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { loadGeneMap, loadVocabulary, Vocabulary } from "@gm/data";
import { type GenePairs, indexPairs, infoNce, loadGenePairs, loadPairsCsv, loadPairsGmt, makeTokenResolver } from "@gm/train";
import { hasShared, repoRoot, shared, tmpDir } from "../../../tests/helpers/paths.js";

interface FixtureCase { name: string; pairs: [number, number, number][]; kept: number; kept_positives: number; loss: number; grad?: number[]; grad_zero?: boolean }
interface Fixture {
  batch: number; length: number; d: number; vocab_size: number; tau: number; pad_id: number; unk_id: number;
  lengths: number[]; tokens: number[]; hidden: number[]; cases: FixtureCase[];
}
const fx = JSON.parse(fs.readFileSync(path.join(repoRoot, "tests/fixtures/infonce/reference.json"), "utf8")) as Fixture;

function pairsOf(list: [number, number, number][], source = "test"): GenePairs {
  const positives = list.filter((p) => p[2] === 1).length;
  return {
    a: Int32Array.from(list.map((p) => p[0])),
    b: Int32Array.from(list.map((p) => p[1])),
    label: Uint8Array.from(list.map((p) => p[2])),
    source,
    stats: { lines: list.length, kept: list.length, unmapped: 0, duplicates: 0, positives, negatives: list.length - positives },
  };
}

/** Deterministic uniform [0, 1). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

describe("infoNce against the PyTorch reference", () => {
  const { batch, length, d, tau } = fx;
  const hidden = Float32Array.from(fx.hidden);
  const tokens = Int32Array.from(fx.tokens);
  const lengths = Int32Array.from(fx.lengths);
  const byName = (n: string) => fx.cases.find((c) => c.name === n)!;

  it("main case: loss within 1e-6 relative, gradient within 1e-6 absolute", () => {
    const c = byName("main");
    const index = indexPairs(pairsOf(c.pairs), fx.vocab_size);
    const r = infoNce(hidden, tokens, lengths, batch, length, d, index, { tau, wantGrad: true });
    expect(r.pairs).toBe(c.kept);
    expect(r.positives).toBe(c.kept_positives);
    expect(Math.abs(r.loss - c.loss) / Math.abs(c.loss)).toBeLessThan(1e-6);
    let maxErr = 0;
    for (let i = 0; i < c.grad!.length; i++) maxErr = Math.max(maxErr, Math.abs(r.grad![i] - c.grad![i]));
    expect(maxErr).toBeLessThan(1e-6);
    // without the gradient: the same loss; scale multiplies the gradient only
    const r2 = infoNce(hidden, tokens, lengths, batch, length, d, index, { tau, wantGrad: true, scale: 0.25 });
    expect(r2.loss).toBe(r.loss);
    for (let i = 0; i < c.grad!.length; i++) expect(Math.abs(r2.grad![i] - 0.25 * c.grad![i])).toBeLessThan(1e-6);
    expect(infoNce(hidden, tokens, lengths, batch, length, d, index, { tau }).grad).toBeUndefined();
  });

  it("no kept positive and no kept pair give loss 0 and a zero gradient (the reference's NaN)", () => {
    for (const name of ["no_positive", "none_kept"]) {
      const c = byName(name);
      expect(c.grad_zero).toBe(true);
      const r = infoNce(hidden, tokens, lengths, batch, length, d, indexPairs(pairsOf(c.pairs), fx.vocab_size), { tau, wantGrad: true });
      expect(r.loss).toBe(0);
      expect(r.pairs).toBe(c.kept);
      expect(r.positives).toBe(0);
      expect(r.grad!.length).toBe(hidden.length);
      expect(r.grad!.every((g) => g === 0)).toBe(true);
    }
  });

  it("ignores pads, UNK and positions past each row's length; their gradient is zero", () => {
    const c = byName("main");
    const index = indexPairs(pairsOf(c.pairs), fx.vocab_size);
    const ref = infoNce(hidden, tokens, lengths, batch, length, d, index, { tau, wantGrad: true });
    // positions past the length carry real gene ids and their hidden states are changed: no effect
    const t2 = tokens.slice();
    const h2 = hidden.slice();
    const rand = lcg(5);
    const ignored: number[] = [];
    for (let r = 0; r < batch; r++)
      for (let t = 0; t < length; t++) {
        const at = r * length + t;
        if (t >= fx.lengths[r]) t2[at] = 2 + (at % 20);
        if (t >= fx.lengths[r] || tokens[at] <= 1) {
          ignored.push(at);
          for (let j = 0; j < d; j++) h2[at * d + j] = rand() * 4 - 2;
        }
      }
    expect(ignored.length).toBeGreaterThan(10);
    const r2 = infoNce(h2, t2, lengths, batch, length, d, index, { tau, wantGrad: true });
    expect(r2.loss).toBe(ref.loss);
    expect(r2.pairs).toBe(ref.pairs);
    for (const at of ignored) for (let j = 0; j < d; j++) expect(r2.grad![at * d + j]).toBe(0);
    // earlier occurrences of a repeated id get no gradient either (last occurrence wins)
    const lastAt = new Map<number, number>();
    for (let r = 0; r < batch; r++) for (let t = 0; t < fx.lengths[r]; t++) if (tokens[r * length + t] > 1) lastAt.set(tokens[r * length + t], r * length + t);
    let earlier = 0;
    for (let at = 0; at < tokens.length; at++) {
      const tok = tokens[at];
      if (tok > 1 && lastAt.get(tok) !== at && !ignored.includes(at)) {
        earlier++;
        for (let j = 0; j < d; j++) expect(ref.grad![at * d + j]).toBe(0);
      }
    }
    expect(earlier).toBeGreaterThan(0);
    // other pad / unk ids are honoured
    const r3 = infoNce(hidden, tokens, lengths, batch, length, d, index, { tau, padId: 39, unkId: 38 });
    // ids 0 and 1 now count as genes: the fixture's pairs (12, 0) and (1, 14) are kept too
    expect(c.pairs.filter((q) => q[0] <= 1 || q[1] <= 1).length).toBe(2);
    expect(r3.pairs).toBe(ref.pairs + 2);
  });

  it("gradient matches float64 central finite differences on a random case", () => {
    const B = 2, L = 10, D = 6, V = 16, tauFd = 0.3, scale = 0.7;
    const rand = lcg(11);
    const tok = new Int32Array(B * L);
    for (let i = 0; i < tok.length; i++) tok[i] = Math.floor(rand() * V);
    const lens = Int32Array.from([10, 7]);
    const h = new Float32Array(B * L * D);
    for (let i = 0; i < h.length; i++) h[i] = Math.round((rand() * 2 - 1) * 256) / 256; // few mantissa bits: h ± eps is exact
    const list: [number, number, number][] = [];
    const seen = new Set<string>();
    while (list.length < 40) {
      const x = 2 + Math.floor(rand() * (V - 2)), y = 2 + Math.floor(rand() * (V - 2));
      const k = x < y ? `${x},${y}` : `${y},${x}`;
      if (x === y || seen.has(k)) continue;
      seen.add(k);
      list.push([x, y, rand() < 0.5 ? 1 : 0]);
    }
    const index = indexPairs(pairsOf(list), V);
    const r = infoNce(h, tok, lens, B, L, D, index, { tau: tauFd, wantGrad: true, scale });
    expect(r.pairs).toBeGreaterThan(10);
    expect(r.positives).toBeGreaterThan(3);
    const eps = 2 ** -12;
    let maxErr = 0, maxG = 0, nonzero = 0;
    for (let i = 0; i < h.length; i++) {
      const x0 = h[i];
      h[i] = x0 + eps;
      const up = infoNce(h, tok, lens, B, L, D, index, { tau: tauFd }).loss;
      h[i] = x0 - eps;
      const dn = infoNce(h, tok, lens, B, L, D, index, { tau: tauFd }).loss;
      h[i] = x0;
      const fd = (scale * (up - dn)) / (2 * eps);
      maxErr = Math.max(maxErr, Math.abs(fd - r.grad![i]));
      maxG = Math.max(maxG, Math.abs(fd));
      if (r.grad![i] !== 0) nonzero++;
    }
    expect(nonzero).toBeGreaterThan(30);
    expect(maxErr).toBeLessThan(1e-4 * maxG + 1e-7);
  });

  it("is fast on 24 x 2048 tokens, d 512, 50k candidate pairs", () => {
    const B = 24, L = 2048, D = 512, V = 25426;
    const rand = lcg(3);
    const list: [number, number, number][] = [];
    const seen = new Set<number>();
    while (list.length < 50_000) {
      const x = 2 + Math.floor(rand() * 11_000), y = 2 + Math.floor(rand() * 11_000);
      if (x === y || seen.has(x < y ? x * V + y : y * V + x)) continue;
      seen.add(x < y ? x * V + y : y * V + x);
      list.push([x, y, list.length % 2]);
    }
    const index = indexPairs(pairsOf(list), V);
    const tok = new Int32Array(B * L);
    for (let i = 0; i < tok.length; i++) tok[i] = 2 + Math.floor(rand() * (V - 2));
    const lens = new Int32Array(B).fill(L);
    lens[B - 1] = 1500;
    const h = new Float32Array(B * L * D);
    for (let i = 0; i < h.length; i++) h[i] = rand() - 0.5;
    const grad = new Float32Array(h.length);
    const t0 = performance.now();
    const r = infoNce(h, tok, lens, B, L, D, index, { tau: 0.1, wantGrad: true, gradOut: grad });
    const ms = performance.now() - t0;
    expect(r.pairs).toBeGreaterThan(5000);
    expect(Number.isFinite(r.loss) && r.loss > 0).toBe(true);
    expect(r.grad).toBe(grad);
    expect(ms).toBeLessThan(5000);
  });
});

describe("pair files", () => {
  const dir = tmpDir("gm-pairs-");
  const write = (name: string, text: string) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  };
  // Simulated-style vocabulary: ENSG999 ids, plus a small symbol map
  const genes = Array.from({ length: 12 }, (_, i) => `ENSG999${String(i).padStart(8, "0")}`);
  const vocab = Vocabulary.fromGenes(genes); // ids 2..13 in sorted order
  const geneMap = new Map([["GA", genes[0]], ["GB", genes[1]], ["GC", genes[2]], ["GD", genes[3]]]);
  const resolve = makeTokenResolver(vocab, geneMap);

  it("resolves vocabulary tokens directly and symbols through the map; never specials", () => {
    expect(resolve(genes[5])).toBe(7);
    expect(resolve(`${genes[5]}.3`)).toBe(7);
    expect(resolve("GB")).toBe(3);
    expect(resolve("gb")).toBe(3);
    expect(resolve("NOPE")).toBeUndefined();
    expect(resolve("[PAD]")).toBeUndefined();
    expect(makeTokenResolver(vocab)("GA")).toBeUndefined();
  });

  it("reads CSV/TSV with a header, dedups unordered pairs (first wins), drops self and unmapped pairs", () => {
    const csv = write("p.csv", ["gene_a,gene_b,label", "GA,GB,1", `GB,GA,0`, `GC,${genes[6]},0`, "GA,GA,1", "GA,NOPE,1", "", "# comment", `${genes[7]},GD,1\r`].join("\n"));
    const p = loadPairsCsv(csv, resolve);
    expect([...p.a]).toEqual([2, 4, 9]);
    expect([...p.b]).toEqual([3, 8, 5]);
    expect([...p.label]).toEqual([1, 0, 1]);
    expect(p.stats).toMatchObject({ lines: 6, kept: 3, unmapped: 1, duplicates: 1, positives: 2, negatives: 1, selfPairs: 1, conflicts: 1 });
    const tsv = write("p.tsv", "GA\tGB\t1\nGC\tGD\t0\n");
    const q = loadGenePairs(tsv, resolve);
    expect([...q.a, ...q.b, ...q.label]).toEqual([2, 4, 3, 5, 1, 0]);
  });

  it("errors name the file, the line and the fix", () => {
    const cols = write("cols.csv", "GA,GB,1\nGA,GC\n");
    expect(() => loadPairsCsv(cols, resolve)).toThrow(new RegExp(`${cols.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: line 2: expected 3 comma-separated columns.*found 2`));
    const lab = write("lab.csv", "GA,GB,1\nGA,GC,maybe\n");
    expect(() => loadPairsCsv(lab, resolve)).toThrow(/lab\.csv: line 2: label 'maybe' must be 1 \(positive\) or 0 \(negative\)/);
    const sym = write("sym.csv", "GA,GB,1\nGC,GD,0\n");
    expect(() => loadPairsCsv(sym, makeTokenResolver(vocab))).toThrow(/sym\.csv: none of the 2 pairs could be mapped.*'GA'.*--gene-map/);
    expect(() => loadPairsCsv(write("empty.csv", "\n# nothing\n"), resolve)).toThrow(/empty\.csv: no gene pairs found/);
    expect(() => loadPairsCsv(path.join(dir, "missing.csv"), resolve)).toThrow(/missing\.csv: gene pair file not found/);
    const gmt = write("sym.gmt", "SET1\turl\tGA\tGB\tGC\n");
    expect(() => loadPairsGmt(gmt, makeTokenResolver(vocab))).toThrow(/sym\.gmt: none of the gene set members could be mapped.*--gene-map/);
    expect(() => loadPairsGmt(write("bad.gmt", "SET1\tGA\n"), resolve)).toThrow(/bad\.gmt: line 1: a GMT line needs/);
  });

  it("GMT: within-set positives, seeded negatives sharing no set, large sets skipped", () => {
    const gmt = write("s.gmt", [`S1\tu\tGA\tGB\tGC\tNOPE`, `S2\tu\tGC\tGD\t${genes[4]}`, `S3\tu\t${genes[5]}\t${genes[6]}\t${genes[7]}\t${genes[8]}`, `BIG\tu\t${genes.join("\t")}`].join("\n") + "\n");
    const p = loadGenePairs(gmt, resolve, { seed: 4, maxSetSize: 6 });
    expect(p.stats).toMatchObject({ lines: 4, sets: 3, skippedSets: 1, unmapped: 1, positives: 3 + 3 + 6, negatives: 0, duplicates: 0 });
    const pos = new Set<string>();
    for (let i = 0; i < p.a.length; i++) if (p.label[i]) pos.add(`${Math.min(p.a[i], p.b[i])},${Math.max(p.a[i], p.b[i])}`);
    expect(pos.has("2,3") && pos.has("4,5") && pos.has("7,10")).toBe(true);
    // BIG (skipped) joins every gene: it still counts as a shared set, so no negative can be found
    const q = loadPairsGmt(gmt, resolve, { seed: 4, maxSetSize: 6 });
    expect([...q.a]).toEqual([...p.a]);
    const noBig = write("s2.gmt", fs.readFileSync(gmt, "utf8").split("\n").slice(0, 3).join("\n"));
    const r = loadPairsGmt(noBig, resolve, { seed: 4, negativesPerPositive: 0.5 });
    expect(r.stats.negatives).toBe(6);
    for (let i = 0; i < r.a.length; i++) if (!r.label[i]) expect(pos.has(`${Math.min(r.a[i], r.b[i])},${Math.max(r.a[i], r.b[i])}`)).toBe(false);
  });

  describe.skipIf(!hasShared)("real pair files", () => {
    const v = hasShared ? loadVocabulary(shared("genes/vocab_25426.json")) : undefined;
    const realResolve = hasShared ? makeTokenResolver(v!, loadGeneMap(shared("genes/gene_symbols.json"))) : () => undefined;

    it("gene_pairs_coexpression.csv maps 45,305 of 50,000 pairs", () => {
      const p = loadPairsCsv(shared("genes/gene_pairs_coexpression.csv"), realResolve);
      expect(p.stats).toMatchObject({ lines: 50_000, kept: 45_305, unmapped: 4_695, duplicates: 0, selfPairs: 0 });
      expect(p.stats.positives).toBe(22_704); // of 25,146 positive lines
      expect(p.stats.negatives).toBe(22_601); // of 24,854
      for (let i = 0; i < p.a.length; i++) if (p.a[i] < 2 || p.b[i] < 2 || p.a[i] === p.b[i]) throw new Error(`bad pair ${i}`);
      const index = indexPairs(p, v!.size);
      expect(index.pairs).toBe(45_305);
      // without the symbol map nothing maps
      expect(() => loadPairsCsv(shared("genes/gene_pairs_coexpression.csv"), makeTokenResolver(v!))).toThrow(/--gene-map/);
    });

    it("msigdb hallmark GMT gives positives and the requested negatives, deterministic per seed", () => {
      const f = shared("genesets/msigdb_h.all.v7.0.symbols.gmt");
      const p = loadPairsGmt(f, realResolve, { seed: 7 });
      expect(p.stats.lines).toBe(50);
      expect(p.stats.skippedSets).toBe(0);
      expect(p.stats).toMatchObject({ sets: 50, unmapped: 313, positives: 540_325, duplicates: 34_259 });
      expect(p.stats.negatives).toBe(p.stats.positives);
      const q = loadPairsGmt(f, realResolve, { seed: 7 });
      expect(Buffer.from(q.a.buffer).equals(Buffer.from(p.a.buffer)) && Buffer.from(q.b.buffer).equals(Buffer.from(p.b.buffer))).toBe(true);
      const other = loadPairsGmt(f, realResolve, { seed: 8, negativesPerPositive: 0.1 });
      expect(other.stats.negatives).toBe(Math.round(0.1 * other.stats.positives));
      const n0 = p.stats.positives;
      let same = 0;
      for (let i = 0; i < 1000; i++) if (other.a[n0 + i] === p.a[n0 + i] && other.b[n0 + i] === p.b[n0 + i]) same++;
      expect(same).toBeLessThan(50);
    });
  });
});
