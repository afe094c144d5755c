// gm finetune / embed / evaluate end to end: on simulated cells (tokenized and h5ad input, resume,
// reports, every evaluate subcommand) and on real data (pbmc68k bulk_labels annotation from a small
// pretrained model; the two legacy PBMC CITE-seq runs embedded together and scored with batch = file).
import { beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { createLogger } from "@gm/core";
import { openCellFile, preprocess, PREPROCESS_DEFAULTS, readObsm, simulate, tokenize, TOKENIZE_DEFAULTS } from "@gm/data";
import { finetune, FINETUNE_DEFAULTS, loadModelBundle, pretrain, resolveRunConfig, type FinetuneOptions } from "@gm/train";
import { errorLines, gm } from "./helpers/cli.js";
import { hasShared, shared, tmpDir } from "./helpers/paths.js";

const log = createLogger("silent");
let root: string, tok: string, raw: string, pre: string;

const tinyModel = { d_model: 32, n_layer: 2, headdim: 16, d_state: 8, chunk_size: 16, combine: "gate" };

beforeAll(async () => {
  root = tmpDir("gm-downstream-");
  raw = path.join(root, "raw", "sim.h5ad");
  await simulate({ cells: 900, genes: 400, cellTypes: 4, batches: 2, seed: 3, out: raw });
  await preprocess({ ...PREPROCESS_DEFAULTS, inputs: [raw], out: path.join(root, "pre"), minGenes: 20 });
  pre = path.join(root, "pre");
  tok = path.join(root, "tok");
  await tokenize({ ...TOKENIZE_DEFAULTS, input: [pre], out: tok, medians: path.join(pre, "gene_medians.json"), maxLen: 48, keepColumns: ["cell_type", "batch"] });
  await pretrain({
    config: resolveRunConfig(
      {
        model: tinyModel,
        data: { dir: tok, max_length: 48 },
        batch: { micro_batch: 16, global_batch: 16 },
        optimizer: { lr: 3e-3 },
        schedule: { type: "cosine", warmup_steps: 2 },
        train: { max_steps: 12, seed: 1 },
        checkpoint: { every: 12 },
        log: { every: 100 },
      },
      "test config",
    ),
    out: path.join(root, "pre-run"),
    log,
  });
});

const ftOptions = (over: Partial<FinetuneOptions>): FinetuneOptions => ({
  ...FINETUNE_DEFAULTS,
  model: path.join(root, "pre-run"),
  data: tok,
  out: path.join(root, "ft"),
  labelKey: "cell_type",
  maxLength: 48,
  epochs: 3,
  patience: 5,
  lr: 1e-3,
  batchSize: 16,
  head: { hidden: 64, n_layers: 4, dropout: 0.5 },
  ...over,
});

const readCsv = (f: string) => fs.readFileSync(f, "utf8").trim().split("\n").map((l) => l.split(","));

describe("gm finetune (simulated cells)", () => {
  it("learns the cell types, keeps every class in both parts, writes predictions, metrics, confusion matrix and a loadable best model", async () => {
    const out = path.join(root, "ft-basic");
    const r = await finetune(ftOptions({ out }), log);
    expect(r.classes.length).toBe(4);
    expect(r.val.macroF1).toBeGreaterThan(0.6); // chance is 0.25
    const rows = readCsv(path.join(out, "predictions.csv"));
    expect(rows[0]).toEqual(["cell", "part", "label", "predicted", "confidence"]);
    expect(rows.length - 1).toBe(r.cells.train + r.cells.val);
    for (const part of ["train", "val"]) expect(new Set(rows.filter((x) => x[1] === part).map((x) => x[2])).size).toBe(4);
    const cm = readCsv(path.join(out, "confusion_matrix.csv"));
    expect(cm.length).toBe(5);
    expect(cm.slice(1).reduce((s, row) => s + row.slice(1).reduce((a, v) => a + Number(v), 0), 0)).toBe(r.cells.val);
    const b = loadModelBundle(path.join(out, "best"));
    expect(b.head?.config.n_classes).toBe(4);
    expect(b.clsId).toBe(b.model.config.vocab_size - 1);
    expect(b.labels?.classes).toEqual(r.classes);
    expect(fs.existsSync(path.join(out, "best", "gene_medians.json"))).toBe(true);
  });

  it("an interrupted run resumed from last/ ends bitwise where an uninterrupted one does", async () => {
    const a = path.join(root, "ft-a"), b = path.join(root, "ft-b");
    const full = await finetune(ftOptions({ out: a, epochs: 3 }), log);
    let calls = 0;
    const first = await finetune(ftOptions({ out: b, epochs: 3, stopRequested: () => ++calls > 60 }), log); // stops inside epoch 2
    expect(first.interrupted).toBe(true);
    expect(first.epochs_run).toBe(1);
    const rest = await finetune(ftOptions({ out: b, epochs: 3, resume: true }), log);
    expect(rest.epochs_run).toBe(3);
    expect(rest.history.map((h) => h.val_macro_f1)).toEqual(full.history.map((h) => h.val_macro_f1));
    expect(fs.readFileSync(path.join(b, "predictions.csv"), "utf8")).toBe(fs.readFileSync(path.join(a, "predictions.csv"), "utf8"));
    expect(Buffer.compare(fs.readFileSync(path.join(a, "best", "model.safetensors")), fs.readFileSync(path.join(b, "best", "model.safetensors")))).toBe(0);
  });

  it("--freeze-backbone leaves the backbone bitwise unchanged", async () => {
    const out = path.join(root, "ft-frozen");
    await finetune(ftOptions({ out, freezeBackbone: true, epochs: 1 }), log);
    const before = loadModelBundle(path.join(root, "pre-run")).model;
    const after = loadModelBundle(path.join(out, "best")).model;
    expect(Array.from(after.tensor("norm_f.weight"))).toEqual(Array.from(before.tensor("norm_f.weight")));
    expect(Array.from(after.tensor("mamba_mixer.layers.0.mamba.in_proj.weight"))).toEqual(Array.from(before.tensor("mamba_mixer.layers.0.mamba.in_proj.weight")));
  });

  it("refuses bad input with one clear line: missing label column, a class with one cell, another model's vocabulary, an existing run", () => {
    const base = ["finetune", "--model", path.join(root, "pre-run"), "--max-length", "48", "--epochs", "1"];
    let r = gm([...base, "--data", tok, "--label-key", "celltype", "--out", path.join(root, "bad1")]);
    expect(r.code).toBe(3);
    expect(errorLines(r.stderr).join("\n")).toMatch(/no column celltype/);
    // the raw h5ad tokenized on the fly; total_counts as the label makes (mostly) one class per cell
    r = gm([...base, "--data", raw, "--label-key", "total_counts", "--out", path.join(root, "bad2")]);
    expect(r.code).toBe(3);
    expect(errorLines(r.stderr).join("\n")).toMatch(/has one cell|have one cell/);
    const twice = [...base, "--data", tok, "--label-key", "cell_type", "--out", path.join(root, "bad3"), "--head-hidden", "16", "--no-report"];
    expect(gm(twice).code).toBe(0);
    r = gm(twice);
    expect(r.code).toBe(3);
    expect(errorLines(r.stderr)[0]).toMatch(/already holds a gm finetune run/);
  });

  it("refuses data tokenized for another vocabulary", async () => {
    const other = path.join(root, "other");
    await simulate({ cells: 120, genes: 450, cellTypes: 2, batches: 1, seed: 9, out: path.join(other, "raw.h5ad") });
    await preprocess({ ...PREPROCESS_DEFAULTS, inputs: [path.join(other, "raw.h5ad")], out: path.join(other, "pre"), minGenes: 20 });
    await tokenize({ ...TOKENIZE_DEFAULTS, input: [path.join(other, "pre")], out: path.join(other, "tok"), medians: path.join(other, "pre", "gene_medians.json"), maxLen: 48, keepColumns: ["cell_type"] });
    const r = gm(["finetune", "--model", path.join(root, "pre-run"), "--data", path.join(other, "tok"), "--label-key", "cell_type", "--out", path.join(other, "ft")]);
    expect(r.code).toBe(3);
    expect(errorLines(r.stderr)[0]).toMatch(/not in the model's vocabulary/);
  });
});

describe("gm embed + gm evaluate (simulated cells, CLI)", () => {
  it("finetune (h5ad input) -> report; embed -> valid h5ad; integration, annotation, reconstruction, gene-pairs reports", () => {
    const ft = path.join(root, "cli-ft");
    let r = gm(["finetune", "--model", path.join(root, "pre-run"), "--data", raw, "--label-key", "cell_type", "--out", ft, "--max-length", "48", "--epochs", "2", "--lr", "1e-3", "--batch-size", "16", "--head-hidden", "64"]);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(ft, "report", "report.html"), "utf8")).toMatch(/<svg[\s\S]*Confusion matrix/);
    const emb = path.join(root, "emb.h5ad");
    r = gm(["embed", "--model", path.join(ft, "best"), "--data", raw, "--out", emb, "--max-length", "48", "--genes-out", path.join(root, "genes.tsv")]);
    expect(r.code, r.stderr).toBe(0);
    const tsv = fs.readFileSync(path.join(root, "genes.tsv"), "utf8").trim().split("\n");
    expect(tsv.length - 1).toBe(loadModelBundle(path.join(ft, "best")).vocab.genes().length);
    for (const [name, args] of [
      ["int", ["integration", "--data", emb, "--label-key", "cell_type", "--batch-key", "batch", "--png"]],
      ["ann", ["annotation", "--predictions", path.join(ft, "predictions.csv")]],
      ["rec", ["reconstruction", "--model", path.join(root, "pre-run"), "--data", tok, "--max-cells", "50"]],
    ] as const) {
      const res = gm(["evaluate", ...args, "--out", path.join(root, `rep-${name}`)]);
      expect(res.code, res.stderr).toBe(0);
      expect(fs.existsSync(path.join(root, `rep-${name}`, "report.html"))).toBe(true);
    }
    const m = JSON.parse(fs.readFileSync(path.join(root, "rep-int", "metrics.json"), "utf8")) as Record<string, number>;
    for (const k of ["nmi_kmeans", "ari_kmeans", "nmi_louvain", "ari_louvain", "asw_label", "asw_batch", "graph_connectivity", "avg_bio", "avg_batch"]) expect(Number.isFinite(m[k]), k).toBe(true);
    expect(m.avg_bio).toBeGreaterThan(0.5); // a fine-tuned embedding separates the simulated types
    expect(fs.readFileSync(path.join(root, "rep-int", "figures", "umap_label.png")).subarray(1, 4).toString()).toBe("PNG");
    const rec = JSON.parse(fs.readFileSync(path.join(root, "rep-rec", "metrics.json"), "utf8")) as Record<string, number>;
    expect(rec.cells).toBe(50);
    expect(rec.levenshtein).toBeGreaterThanOrEqual(0);
  });

  it("the embedded h5ad reads back: same cells, counts kept, embedding in obsm (and h5py agrees when available)", async () => {
    const emb = path.join(root, "emb.h5ad");
    const a = await openCellFile(raw), b = await openCellFile(emb);
    expect(b.nCells).toBe(a.nCells);
    const ba = a.matrix("X").readBlock(0, 5), bb = b.matrix("X").readBlock(0, 5);
    expect(Array.from(bb.data)).toEqual(Array.from(ba.data));
    expect(b.readObs(["cell_type"], 0, a.nCells).index).toEqual(a.readObs(["cell_type"], 0, a.nCells).index);
    a.close();
    b.close();
    const o = await readObsm(emb, "X_genemamba");
    expect([o.nRows, o.nCols]).toEqual([900, 32]);
    expect(o.data.every(Number.isFinite)).toBe(true);
    const py = spawnSync("/usr/bin/python3", ["-c", `import h5py,sys; f=h5py.File(sys.argv[1],'r'); d=f['obsm/X_genemamba']; print(d.shape, d.dtype, f['obsm'].attrs.get('encoding-type'))`, emb], { encoding: "utf8" });
    if (py.status === 0) expect(py.stdout.trim()).toBe("(900, 32) float32 dict");
  });

  it("evaluate refuses a missing embedding key and missing columns with one clear line", () => {
    let r = gm(["evaluate", "integration", "--data", path.join(root, "emb.h5ad"), "--embedding", "X_nope", "--out", path.join(root, "bad-int")]);
    expect(r.code).toBe(3);
    expect(errorLines(r.stderr)[0]).toMatch(/X_nope/);
    expect(errorLines(r.stderr)[0]).toMatch(/X_genemamba/);
    r = gm(["eval", "integration", "--data", path.join(root, "emb.h5ad"), "--label-key", "celltype", "--out", path.join(root, "bad-int")]);
    expect(r.code).toBe(3);
    expect(errorLines(r.stderr)[0]).toMatch(/no column 'celltype'/);
    r = gm(["embed", "--model", path.join(root, "pre-run"), "--data", raw, "--out", path.join(root, "x.h5ad"), "--pooling", "cls"]);
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)[0]).toMatch(/no \[CLS\] token/);
    expect(fs.existsSync(path.join(root, "x.h5ad"))).toBe(false);
  });
});

describe.skipIf(!hasShared)("real data", () => {
  const geneArgs = () => ["--gene-map", shared("genes/gene_symbols.json")];
  let dir: string;
  beforeAll(() => {
    dir = tmpDir("gm-downstream-real-");
    // a small model pretrained briefly on pbmc68k itself (reference vocabulary and medians)
    const ptok = path.join(dir, "tok");
    const r = gm(["tokenize", shared("h5ad/pbmc68k_reduced_counts.h5ad"), "--out", ptok, "--medians", shared("genes/gene_medians_v1.json"), "--vocab", shared("genes/vocab_25426.json"), ...geneArgs(), "--counts-layer", "counts", "--max-len", "128", "--min-genes", "0"]);
    expect(r.code, r.stderr).toBe(0);
    const cfg = { model: { d_model: 64, n_layer: 2, d_state: 16, headdim: 16, combine: "gate" }, data: { max_length: 128 }, batch: { micro_batch: 16, global_batch: 16 }, optimizer: { lr: 3e-3, weight_decay: 0.01, max_grad_norm: 1 }, schedule: { type: "cosine", warmup_steps: 5, min_lr_ratio: 0.1 }, train: { max_steps: 40, seed: 1 }, checkpoint: { every: 40 }, log: { every: 100 } };
    fs.writeFileSync(path.join(dir, "cfg.json"), JSON.stringify(cfg));
    const p = gm(["pretrain", "--config", path.join(dir, "cfg.json"), "--data", ptok, "--out", path.join(dir, "pre")]);
    expect(p.code, p.stderr).toBe(0);
  });

  it("pbmc68k bulk_labels (10 classes) fine-tuned from h5ad: macro-F1 well above chance, report renders", () => {
    const out = path.join(dir, "ft");
    const r = gm(["finetune", "--model", path.join(dir, "pre"), "--data", shared("h5ad/pbmc68k_reduced_counts.h5ad"), "--label-key", "bulk_labels", "--counts-layer", "counts", ...geneArgs(), "--out", out, "--max-length", "128", "--epochs", "10", "--patience", "10", "--lr", "1e-3"]);
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(fs.readFileSync(path.join(out, "metrics.json"), "utf8")) as { val: { macroF1: number; accuracy: number }; classes: string[]; cells: { train: number; val: number } };
    expect(m.classes.length).toBe(10);
    expect(m.cells.train + m.cells.val).toBe(700);
    // chance: 0.1 macro-F1; the majority class (Dendritic) is 34% of cells
    expect(m.val.macroF1).toBeGreaterThan(0.3);
    expect(m.val.accuracy).toBeGreaterThan(0.45);
    const html = fs.readFileSync(path.join(out, "report", "report.html"), "utf8");
    expect(html).toMatch(/CD14\+ Monocyte/);
    expect((html.match(/<svg/g) ?? []).length).toBeGreaterThanOrEqual(3);
  });

  it("the fine-tuned pbmc68k model (25k-gene vocabulary) exported to ONNX predicts and embeds like the native engine", () => {
    const ft = path.join(dir, "ft");
    const onnx = path.join(dir, "pbmc.onnx");
    let r = gm(["export", "--model", ft, "--onnx", onnx, "--with-classifier"]);
    expect(r.code, r.stderr).toBe(0);
    const data = [shared("h5ad/pbmc68k_reduced_counts.h5ad"), "--counts-layer", "counts", ...geneArgs(), "--max-length", "128"];
    for (const [model, name] of [[onnx, "onnx"], [ft, "native"]]) {
      r = gm(["predict", "--model", model, "--data", ...data, "--label-key", "bulk_labels", "--out", path.join(dir, `pred-${name}.csv`)]);
      expect(r.code, r.stderr).toBe(0);
      r = gm(["embed", "--model", model, "--data", ...data, "--out", path.join(dir, `emb-${name}.npy`)]);
      expect(r.code, r.stderr).toBe(0);
    }
    const a = readCsv(path.join(dir, "pred-onnx.csv"));
    const b = readCsv(path.join(dir, "pred-native.csv"));
    expect(a.length).toBe(701);
    expect(a[0].slice(0, 3)).toEqual(["cell", "predicted", "probability"]);
    expect(a.map((row) => row[1])).toEqual(b.map((row) => row[1]));
    for (let i = 1; i < a.length; i++) for (let k = 2; k < a[i].length; k++) expect(Math.abs(Number(a[i][k]) - Number(b[i][k]))).toBeLessThan(1e-4);
    const npy = (f: string) => {
      const buf = fs.readFileSync(f);
      const off = 10 + buf.readUInt16LE(8);
      return new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + buf.length));
    };
    const ea = npy(path.join(dir, "emb-onnx.npy"));
    const eb = npy(path.join(dir, "emb-native.npy"));
    expect(ea.length).toBe(700 * 64);
    let err = 0, scale = 0;
    for (let i = 0; i < ea.length; i++) {
      err = Math.max(err, Math.abs(ea[i] - eb[i]));
      scale = Math.max(scale, Math.abs(eb[i]));
    }
    expect(err / scale).toBeLessThan(1e-4);
  });

  it("the two legacy PBMC runs embed together and give integration metrics with batch = file", () => {
    const emb = path.join(dir, "pbmc_legacy.h5ad");
    let r = gm(["embed", "--model", path.join(dir, "pre"), "--data", shared("h5ad/pbmc_10k_protein_v3_legacy.h5ad"), shared("h5ad/pbmc_5k_protein_v3_legacy.h5ad"), ...geneArgs(), "--out", emb, "--max-length", "128"]);
    expect(r.code, r.stderr).toBe(0);
    r = gm(["evaluate", "integration", "--data", emb, "--batch-key", "file", "--out", path.join(dir, "int")]);
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(fs.readFileSync(path.join(dir, "int", "metrics.json"), "utf8")) as Record<string, unknown>;
    expect(m.cells).toBe(400);
    expect(m.asw_batch as number).toBeGreaterThan(0);
    expect(m.asw_batch as number).toBeLessThanOrEqual(1);
    expect(m.graph_connectivity as number).toBeGreaterThan(0);
    expect(m.avg_batch as number).toBeGreaterThan(0);
    expect((m.notes as Record<string, string>).bio).toMatch(/no --label-key/);
  });

  it("gene pairs of the Gene2Vec benchmark score through the symbol map", () => {
    const r = gm(["evaluate", "gene-pairs", "--model", path.join(dir, "pre"), "--pairs", shared("gene_pairs"), ...geneArgs(), "--out", path.join(dir, "gp")]);
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(fs.readFileSync(path.join(dir, "gp", "metrics.json"), "utf8")) as Record<string, number>;
    expect(m.scored).toBeGreaterThan(10000);
    expect(m.roc_auc).toBeGreaterThan(0);
    expect(m.roc_auc).toBeLessThan(1);
  });
});
