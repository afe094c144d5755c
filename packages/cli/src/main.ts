/**
 * The `gm` binary. Subcommands are declared here (options and help only) and their implementation
 * modules are imported lazily inside the action, so `gm --help` or `gm census-fetch` never load
 * h5wasm, Arrow or the native engine.
 */
import { Command, CommanderError, Option } from "commander";
import { ExitCode, GM_VERSION, LOG_LEVELS, asOutputError, createLogger, isGmError, type Logger } from "@gm/core";
import { applyConfig } from "./config.js";
import { int, list, positive } from "./options.js";

export type Action = (opts: Record<string, unknown>, args: string[], log: Logger) => Promise<void>;

function examples(lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  $ ${l}`).join("\n")}\n`;
}

/** Input cleaning options, shared by preprocess and tokenize (for its h5ad / 10x inputs). */
function cleaningOptions(cmd: Command, prefix: string): Command {
  return cmd
    .option("--counts-layer <name>", `${prefix}matrix with raw counts: X, raw/X or a layer name (default: first of raw/X, X, layers/counts holding integers)`)
    .option("--gene-id-column <col>", `${prefix}var column holding Ensembl ids (default: the var index, or a gene_ids/feature_id column)`)
    .option("--gene-map <file>", `${prefix}JSON symbol -> Ensembl map for inputs identified by gene symbols`)
    .option("--min-genes <n>", `${prefix}drop cells with fewer expressed genes`, int("--min-genes", 0), 200)
    .option("--target-sum <x>", `${prefix}normalisation target: counts / n_counts * target_sum`, positive("--target-sum"), 10000)
    .option("--allow-non-integer", `${prefix}accept non-integer counts`, false)
    .option("--unit-cells <n>", `${prefix}cells per work unit (and per output shard)`, int("--unit-cells", 1), 20000);
}

function common(cmd: Command): Command {
  return cmd.option("--config <file>", "JSON file with option values (flags given on the command line win)");
}

export function buildProgram(): Command {
  const program = new Command("gm")
    .description("gm: single-cell foundation models of the GeneMamba family — data, training, evaluation")
    .version(GM_VERSION, "-V, --version")
    .addOption(new Option("--log-level <level>", "log verbosity").choices(LOG_LEVELS).default("info"))
    .addOption(new Option("--log-format <format>", "log format (default: pretty on a terminal, JSON lines otherwise)").choices(["json", "pretty"]))
    .exitOverride()
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .addHelpText(
      "after",
      `\nExit codes: 0 ok, 1 internal error, 2 usage error, 3 bad input data, 4 output error, 130 interrupted.\nDocs: docs/cli.md, docs/formats.md.\n`,
    );

  common(
    program
      .command("simulate")
      .description("write a realistic synthetic h5ad (negative-binomial counts, cell-type programs, batch effects)")
      .option("--cells <n>", "number of cells", int("--cells", 1), 2000)
      .option("--genes <n>", "number of genes", int("--genes", 10), 20000)
      .option("--cell-types <k>", "number of cell types", int("--cell-types", 1), 8)
      .option("--batches <b>", "number of batches", int("--batches", 1), 2)
      .option("--seed <s>", "random seed (same seed, same file contents)", int("--seed", 0), 0)
      .requiredOption("--out <file.h5ad>", "output h5ad file")
      .option("--gene-sets <file.gmt>", "also write the cell-type programs (ground-truth co-expressed gene sets) as GMT")
      .addHelpText("after", examples(["gm simulate --cells 5000 --genes 20000 --cell-types 8 --batches 3 --seed 1 --out demo.h5ad"])),
  ).action(lazy(() => import("./commands/simulate.js")));

  common(
    cleaningOptions(
      program.command("preprocess"),
      "",
    )
      .description("filter, depth-normalise and digest h5ad / 10x inputs into sharded Arrow cells, gene medians and a vocabulary")
      .argument("[inputs...]", ".h5ad files, 10x .h5 files, 10x MEX folders, or folders holding them (searched recursively)")
      .option("--out <dir>", "output folder")
      .option("--vocab <file>", "vocabulary to keep (gm JSON, HF tokenizer.json or a gene list); default: protein_coding + miRNA genes")
      .option("--log1p", "store log1p of the normalised values (medians and tokens are unaffected)", false)
      .option("--workers <n>", "worker threads", int("--workers", 1), 1)
      .option("--shard <K/N>", "process only the K-th of N slices of the sorted inputs (K is 1-based)")
      .option("--merge <dirs...>", "combine the outputs of --shard runs into --out")
      .addHelpText(
        "after",
        examples([
          "gm preprocess data/raw/*.h5ad --out data/pre --workers 2",
          "gm preprocess pbmc.h5ad --out pre --counts-layer counts --gene-map gene_symbols.json --vocab vocab.json",
          "gm preprocess data/raw --out pre-$SLURM_ARRAY_TASK_ID --shard $((SLURM_ARRAY_TASK_ID+1))/8",
          "gm preprocess --merge pre-0 pre-1 pre-2 pre-3 pre-4 pre-5 pre-6 pre-7 --out data/pre",
        ]),
      ),
  ).action(lazy(() => import("./commands/preprocess.js")));

  common(
    cleaningOptions(
      program.command("tokenize"),
      "h5ad input: ",
    )
      .description("rank-value tokenize cells (Geneformer rule) into a Hugging Face datasets folder of Arrow shards")
      .argument("[inputs...]", "a gm preprocess folder, or .h5ad / 10x inputs (cleaned as preprocess does)")
      .option("--out <dir>", "output folder")
      .option("--medians <file>", "gene medians JSON {ensembl_id: median} (gm preprocess writes gene_medians.json)")
      .option("--vocab <file>", "vocabulary (default: the preprocess folder's vocab.json, else one next to --medians, else the medians' genes)")
      .option("--max-len <n>", "maximum tokens per cell, specials included", int("--max-len", 1), 2048)
      .option("--cls", "prepend [CLS] (added to the vocabulary if missing)", false)
      .option("--eos", "append [EOS] (added to the vocabulary if missing)", false)
      .option("--keep-columns <cols>", "obs columns to carry into the dataset (comma separated)", list, [])
      .option("--workers <n>", "worker threads", int("--workers", 1), 1)
      .addHelpText(
        "after",
        examples([
          "gm tokenize data/pre --out data/tok --medians data/pre/gene_medians.json --max-len 2048",
          "gm tokenize pancreas.h5ad --out tok/pancreas --medians data/pre/gene_medians.json --vocab data/pre/vocab.json --gene-map genes.json --counts-layer counts --cls --keep-columns cell_type,batch",
        ]),
      ),
  ).action(lazy(() => import("./commands/tokenize.js")));

  const repeat = (v: string, prev: string[] = []): string[] => [...prev, v];
  common(
    program
      .command("census-fetch")
      .description("download CELLxGENE Discover datasets (H5AD) with resume, retries, checksums and a manifest")
      .option("--organism <name>", "keep datasets with this organism: label (case-insensitive) or ontology term id; repeat for OR", repeat, [])
      .option("--assay <name>", "keep datasets with this assay (label or ontology term id); repeat for OR", repeat, [])
      .option("--tissue <name>", "keep datasets with this tissue (label or ontology term id); repeat for OR", repeat, [])
      .option("--disease <name>", "keep datasets with this disease (label or ontology term id); repeat for OR", repeat, [])
      .option("--min-cells <n>", "keep datasets with at least n cells", int("--min-cells", 0), 0)
      .option("--schema-version <v>", "keep datasets of this schema version (5, 5.2 or 5.2.0)")
      .option("--primary-only", "keep datasets holding primary data (is_primary_data true)", false)
      .option("--datasets <file>", "only these dataset ids or dataset version ids, one per line (# comments)")
      .option("--out <dir>", "download folder: OUT/<dataset_id>/<dataset_version_id>.h5ad and OUT/manifest.jsonl")
      .option("--dry-run", "print the plan (datasets, sizes, cells, what is present) and download nothing", false)
      .option("--json", "print the plan / the run summary as JSON on stdout", false)
      .option("--max-datasets <n>", "select at most n datasets (present ones included), oldest first", int("--max-datasets", 1))
      .option("--max-bytes <size>", "select datasets up to this total size, e.g. 500GB, 1.5TiB (present ones included)")
      .option("--concurrency <n>", "parallel downloads", int("--concurrency", 1), 2)
      .option("--retries <n>", "consecutive failed attempts allowed per file (a failure after new bytes arrived does not count)", int("--retries", 0), 10)
      .option("--keep-free <size>", "leave at least this much free space on OUT's file system", "1GiB")
      .addOption(new Option("--verify <mode>", "re-runs check present files by size and sha256 (full) or size only").choices(["full", "size"]).default("full"))
      .addOption(new Option("--api-url <url>", "CELLxGENE Discover curation API base URL").env("GM_CELLXGENE_API_URL").default("https://api.cellxgene.cziscience.com/curation/v1"))
      .addHelpText(
        "after",
        examples([
          `gm census-fetch --organism "Homo sapiens" --assay "10x 3' v3" --min-cells 1000 --dry-run`,
          `gm census-fetch --organism "Homo sapiens" --assay "10x 3' v3" --out data/raw --max-bytes 500GB --concurrency 4`,
          "gm census-fetch --datasets ids.txt --out data/raw",
          "gm preprocess data/raw --out data/pre",
        ]),
      ),
  ).action(lazy(() => import("./commands/census-fetch.js")));

  program
    .command("pretrain")
    .description("pretrain a GeneMamba model on tokenized shards: MLM or next-gene objective, optional gene-pair InfoNCE, data-parallel ranks, resumable checkpoints")
    .option("--config <file>", "pretraining run config (configs/pretrain/*.json): model, objective, data, batch, optimizer, schedule, train, checkpoint, log")
    .option("--data <dir>", "tokenized dataset (a gm tokenize output folder); overrides data.dir")
    .option("--out <dir>", "run folder: checkpoint-<step>/, metrics.jsonl, loss.svg, run.json")
    .option("--resume [dir]", "continue the run in DIR (default: --out) from its latest checkpoint, exactly")
    .option("--max-steps <n>", "optimizer steps (overrides train.max_steps)", int("--max-steps", 1))
    .option("--micro-batch <n>", "cells per rank per micro-step (overrides batch.micro_batch)", int("--micro-batch", 1))
    .option("--global-batch <n>", "cells per optimizer step over all ranks (gradient accumulation fills the gap)", int("--global-batch", 1))
    .option("--lr <x>", "peak learning rate (overrides optimizer.lr)", positive("--lr"))
    .option("--seed <n>", "seed of initialisation, shuffling and masking (overrides train.seed)", int("--seed", 0))
    .option("--pairs <file>", "gene pairs for the InfoNCE loss: CSV (a,b,label) or GMT gene sets (overrides objective.infonce.pairs)")
    .option("--gene-map <file>", "symbol -> Ensembl JSON map for the pair file's gene symbols")
    .option("--save-every <n>", "checkpoint every n steps (overrides checkpoint.every)", int("--save-every", 1))
    .option("--keep-last <k>", "keep only the newest k checkpoints; 0 keeps all (overrides checkpoint.keep_last)", int("--keep-last", 0))
    .option("--log-every <n>", "log a step line every n steps (overrides log.every)", int("--log-every", 1))
    .option("--ranks <n>", "data-parallel CPU ranks in this process", int("--ranks", 1))
    .option("--gpus <n>", "one rank per GPU on this node, one worker process each (needs the CUDA backend: gm doctor)", int("--gpus", 1))
    .option("--precision <p>", "GPU ranks: bf16 (activations and weight copies, fp32 master weights and optimizer; default) or fp32")
    .option("--nnodes <n>", "nodes in a multi-node run (torchrun-style)", int("--nnodes", 1))
    .option("--node-rank <k>", "this node's index, 0-based", int("--node-rank", 0))
    .option("--master-addr <host>", "rank 0's address for multi-node rendezvous")
    .option("--master-port <port>", "rank 0's port for multi-node rendezvous (default 29500)", int("--master-port", 1))
    .option("--threads <n>", "engine threads (default: all cores, or GM_THREADS)", int("--threads", 1))
    .addHelpText(
      "after",
      examples([
        "gm pretrain --config configs/pretrain/genemamba-24l-512d.json --data data/tok --out runs/gm-512d",
        "gm pretrain --resume runs/gm-512d",
        "gm pretrain --config configs/pretrain/demo.json --data demo-output/tok --out runs/demo --ranks 2",
        "gm pretrain --config configs/pretrain/genemamba-24l-512d.json --data data/tok --out runs/x --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500",
        "gm pretrain --config configs/pretrain/genemamba-24l-512d.json --data data/tok --out runs/x --gpus 4",
        "gm pretrain --config configs/pretrain/genemamba-24l-512d.json --data data/tok --out runs/x --gpus 4 --nnodes 2 --node-rank 1 --master-addr node0 --master-port 29500",
      ]),
    )
    .action(lazy(() => import("./commands/pretrain.js"), { ownConfig: true }));

  /** Options for reading h5ad/10x input with a model's vocabulary (finetune, embed, evaluate). */
  const modelInput = (cmd: Command) =>
    cmd
      .option("--medians <file>", "gene medians for h5ad input (default: the model folder's gene_medians.json)")
      .option("--counts-layer <name>", "h5ad input: matrix with raw counts: X, raw/X or a layer name (default: first of raw/X, X, layers/counts holding integers)")
      .option("--gene-id-column <col>", "h5ad input: var column holding Ensembl ids (default: the var index, or a gene_ids/feature_id column)")
      .option("--gene-map <file>", "h5ad input: JSON symbol -> Ensembl map for genes identified by symbols")
      .option("--threads <n>", "engine threads; with --runtime onnx, onnxruntime's intra-op threads shared by its workers (default: all cores, or GM_THREADS)", int("--threads", 1));

  common(
    modelInput(
      program
        .command("finetune")
        .description("fine-tune a pretrained model for cell-type annotation: [CLS] + the reference classifier head, stratified split, early stopping on validation macro-F1")
        .option("--model <dir>", "pretrained model: a checkpoint folder or a gm pretrain run (its latest checkpoint)")
        .option("--data <path>", "labelled cells: .h5ad / 10x (tokenized on the fly with the model's vocabulary and medians) or a gm tokenize folder")
        .option("--label-key <col>", "obs / dataset column with the cell types")
        .option("--out <dir>", "output folder: best/, last/, predictions.csv, metrics.json, confusion_matrix.csv, history.jsonl")
        .option("--split-key <col>", "use this column's train / test (or val) split instead of a stratified one")
        .option("--val-fraction <x>", "validation share of each class for the stratified split", positive("--val-fraction"), 0.1)
        .option("--epochs <n>", "maximum epochs", int("--epochs", 1), 10)
        .option("--patience <n>", "stop after n epochs without a better validation macro-F1", int("--patience", 1), 3)
        .option("--batch-size <n>", "cells per optimizer step (reference: 24)", int("--batch-size", 2), 24)
        .option("--lr <x>", "Adam learning rate (reference: 1e-4)", positive("--lr"), 1e-4)
        .option("--max-length <n>", "tokens per cell including [CLS]", int("--max-length", 2), 2048)
        .option("--freeze-backbone", "train only the head (the backbone gives fixed CLS vectors)", false)
        .option("--class-weight <mode>", "none | balanced (weights n / (C * n_c) in the loss)", "none")
        .option("--drop-labels <labels>", "labels to leave out (comma separated), e.g. unknown", list, [])
        .option("--max-cells <n>", "fine-tune on a stratified subsample of n cells (0 = all)", int("--max-cells", 0), 0)
        .option("--head-hidden <n>", "head hidden width", int("--head-hidden", 1), 512)
        .option("--head-layers <n>", "head layers (Linear count)", int("--head-layers", 1), 4)
        .option("--head-dropout <x>", "head dropout", Number, 0.5)
        .option("--seed <n>", "seed of the split, the head's initialisation, the order and dropout", int("--seed", 0), 0)
        .option("--resume", "continue the run in --out after its last finished epoch", false)
        .option("--no-report", "skip the annotation report (OUT/report/report.html)")
        .addHelpText(
          "after",
          examples([
            "gm finetune --model runs/gm-512d/checkpoint-best --data pancreas.h5ad --label-key cell_type --counts-layer counts --out runs/pancreas",
            "gm finetune --model runs/demo --data tok/pbmc --label-key cell_type --split-key partition --freeze-backbone --out runs/pbmc-frozen",
          ]),
        ),
    ),
  ).action(lazy(() => import("./commands/finetune.js")));

  common(
    runtimeOptions(modelInput(
      program
        .command("embed")
        .description("cell embeddings (CLS or mean pooling) into a new h5ad's obsm and/or Arrow/NPY; gene embeddings (input table and context-aware mean) to TSV/NPY")
        .option("--model <path>", "model folder (pretrained or fine-tuned), or an .onnx file from gm export --onnx")
        .option("--data <paths...>", "cells: .h5ad / 10x files or gm tokenize folders; several h5ad files are embedded into one output with a file column")
        .option("--out <file>", "output: a .h5ad (the input with obsm[key] added; several inputs: a new h5ad with obs and obsm), .arrow or .npy")
        .option("--key <name>", "obsm key", "X_genemamba")
        .option("--pooling <mode>", "cls | mean (default: cls for fine-tuned models, mean otherwise)")
        .option("--batch-size <n>", "cells per forward pass", int("--batch-size", 1), 32)
        .option("--max-length <n>", "tokens per cell (including [CLS] with cls pooling)", int("--max-length", 2), 2048)
        .option("--genes-out <file>", "also write gene embeddings: .tsv (gene, values...) or .npy, with a <file>.genes.txt for .npy")
        .option("--gene-context", "gene embeddings as the mean final hidden state of each gene over the cells (context-aware) instead of the input embedding table", false)
        .option("--batch-column <name>", "with several inputs: the obs column naming the source file", "file")
        .option("--obs-columns <cols>", "obs columns carried into a combined output (default: every kept column of tokenized input)", list),
    )),
  )
    .addHelpText(
      "after",
      examples([
        "gm embed --model runs/pancreas/best --data covid.h5ad --out covid_embedded.h5ad",
        "gm embed --model runs/demo --data a.h5ad b.h5ad --out ab.h5ad --pooling mean",
        "gm embed --model runs/demo --data tok/pbmc --out pbmc.npy --genes-out genes.tsv --gene-context",
        "gm embed --model pancreas.onnx --data covid.h5ad --out covid_embedded.h5ad --workers 2",
      ]),
    )
    .action(lazy(() => import("./commands/embed.js")));

  common(
    runtimeOptions(modelInput(
      program
        .command("predict")
        .description("cell-type predictions of a fine-tuned model (a gm finetune folder or an .onnx exported with --with-classifier) as CSV: cell, predicted, probability, p_<class>...")
        .option("--model <path>", "gm finetune model folder (its best/) or .onnx file exported with --with-classifier")
        .option("--data <path>", "cells: an .h5ad / 10x file (tokenized on the fly with the model's vocabulary and medians) or a gm tokenize folder")
        .option("--out <file>", "predictions CSV (rows in input order; overwritten if it exists)")
        .option("--batch-size <n>", "cells per forward pass", int("--batch-size", 1), 32)
        .option("--max-length <n>", "tokens per cell including [CLS]", int("--max-length", 2), 2048)
        .option("--label-key <col>", "obs / dataset column with true labels: log accuracy and macro-F1"),
    )),
  )
    .addHelpText(
      "after",
      examples([
        "gm predict --model runs/pancreas/best --data new_donor.h5ad --out predictions.csv",
        "gm predict --model pancreas.onnx --data new_donor.h5ad --out predictions.csv --workers 2 --threads 8",
        "gm predict --model pancreas.onnx --data tok/pancreas --out predictions.csv --label-key cell_type",
      ]),
    )
    .action(lazy(() => import("./commands/predict.js")));

  common(
    program
      .command("export")
      .description("export a model folder as an ONNX graph (opset 17) with its vocabulary, medians and labels in the metadata, for gm embed/predict --runtime onnx or any onnxruntime")
      .option("--model <dir>", "gm pretrain or finetune model folder (a run folder: its best/ or latest checkpoint)")
      .option("--onnx <file>", "the .onnx file to write")
      .option("--with-classifier", "include the fine-tuning head: class_logits and class_probabilities outputs (needed by gm predict)", false)
      .option("--fp16", "store the weights in half precision (half the file; computed in float32)", false)
      .option("--with-logits", "include the LM head's logits [batch, sequence, vocab] output", false)
      .addOption(new Option("--scan <form>", "selective scan as chunked matrices (ssd, Mamba-2 only; default there) or an ONNX Scan loop").choices(["ssd", "loop"]))
      .option("--chunk <n>", "chunk length of the ssd form", int("--chunk", 1))
      .addHelpText(
        "after",
        examples([
          "gm export --model runs/pancreas/best --onnx pancreas.onnx --with-classifier",
          "gm export --model runs/gm-512d --onnx gm-512d.onnx --fp16",
        ]),
      ),
  ).action(lazy(() => import("./commands/export.js")));

  const evaluate = program
    .command("evaluate")
    .alias("eval")
    .description("score models and embeddings: annotation, integration, reconstruction, gene-pairs; each writes metrics.json and an HTML report");
  common(
    evaluate
      .command("annotation")
      .description("accuracy, macro/micro F1, weighted precision/recall, per-class table and confusion matrix from a predictions.csv (sklearn semantics)")
      .option("--predictions <file>", "CSV with label and predicted columns (gm finetune's predictions.csv)")
      .option("--part <name>", "rows of this part only (the part column); 'all' for every row", "val")
      .option("--out <dir>", "report folder: metrics.json, report.html, figures/")
      .option("--png", "also write PNG figures", false),
  ).action(lazy(() => import("./commands/evaluate.js").then((m) => ({ run: m.annotation }))));
  common(
    evaluate
      .command("integration")
      .description("NMI/ARI (KMeans and a Louvain sweep), cell-type and batch ASW, graph connectivity, isolated labels, AvgBIO/AvgBATCH, UMAP plots")
      .option("--data <file>", "h5ad with the embedding in obsm (gm embed output)")
      .option("--embedding <key>", "obsm key", "X_genemamba")
      .option("--label-key <col>", "obs column with cell types (omit when unlabelled: batch metrics then treat all cells as one group)")
      .option("--batch-key <col>", "obs column with batches")
      .option("--neighbors <k>", "kNN graph size including the cell itself (scanpy's n_neighbors)", int("--neighbors", 2), 15)
      .option("--umap-max-cells <n>", "UMAP on at most n cells (a stratified seeded subsample; umap-js needs ~3 s per 1000 cells)", int("--umap-max-cells", 0), 5000)
      .option("--no-louvain", "skip the Louvain resolution sweep")
      .option("--seed <n>", "seed for KMeans, Louvain and UMAP", int("--seed", 0), 0)
      .option("--out <dir>", "report folder")
      .option("--png", "also write PNG figures", false)
      .option("--threads <n>", "threads for the silhouette kernels", int("--threads", 1)),
  ).action(lazy(() => import("./commands/evaluate.js").then((m) => ({ run: m.integration }))));
  common(
    modelInput(
      evaluate
        .command("reconstruction")
        .description("predicted gene ranking vs the input per cell: Levenshtein, BLEU-4 (GeneMamba's and NLTK's), Spearman, top-k overlap")
        .option("--model <dir>", "pretrained model folder")
        .option("--data <path>", "cells: a gm tokenize folder or .h5ad")
        .option("--max-cells <n>", "score the first n cells", int("--max-cells", 1), 1000)
        .option("--max-length <n>", "tokens per cell", int("--max-length", 2), 2048)
        .option("--top-k <n>", "top-k overlap size", int("--top-k", 1), 10)
        .option("--batch-size <n>", "cells per forward pass", int("--batch-size", 1), 16)
        .option("--out <dir>", "report folder")
        .option("--png", "also write PNG figures", false),
    ),
  ).action(lazy(() => import("./commands/evaluate.js").then((m) => ({ run: m.reconstruction }))));
  common(
    evaluate
      .command("gene-pairs")
      .description("cosine similarity of gene embeddings for positive and negative pairs: ROC-AUC and distances between the two distributions")
      .option("--model <dir>", "model folder")
      .option("--pairs <path>", "Gene2Vec folder (<part>_text.txt + <part>_label.txt), or a CSV gene_a,gene_b,label")
      .option("--part <name>", "Gene2Vec part: train, valid or test", "test")
      .option("--gene-map <file>", "JSON symbol -> Ensembl map for pair files with gene symbols")
      .option("--out <dir>", "report folder")
      .option("--png", "also write PNG figures", false),
  ).action(lazy(() => import("./commands/evaluate.js").then((m) => ({ run: m.genePairs }))));

  program
    .command("doctor")
    .description("what this installation can run: gm and Node versions, the native addon and its backends (CPU, CUDA: built, or why not), OpenMP threads, onnxruntime-node, GPUs")
    .option("--json", "print the report as one JSON object on stdout", false)
    .addHelpText("after", examples(["gm doctor", "gm doctor --json"]))
    .action(lazy(() => import("./commands/doctor.js")));

  return program;
}

/** --runtime, --workers, --provider of the commands that run a model forward (embed, predict); --threads is modelInput's. */
function runtimeOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option("--runtime <runtime>", "native engine on a model folder, or onnxruntime on an .onnx file (default: onnx when --model ends in .onnx)").choices(["native", "onnx"]))
    .option("--workers <n>", "onnx runtime: onnxruntime sessions in worker threads, i.e. batches in flight (--threads are split between them)", int("--workers", 1))
    .addOption(new Option("--provider <provider>", "onnx runtime: execution provider (auto: CUDA when onnxruntime-node has its CUDA provider, else CPU)").choices(["cpu", "cuda", "auto"]).default("auto"));
}

function lazy(load: () => Promise<{ run: Action }>, how: { ownConfig?: boolean } = {}) {
  return async function (this: Command, ...params: unknown[]) {
    const cmd = params[params.length - 1] as Command;
    // A command with a structured config (pretrain) reads its --config itself.
    const opts = how.ownConfig ? (cmd.opts() as Record<string, unknown>) : applyConfig(cmd, cmd.opts().config as string | undefined);
    const global = cmd.parent?.opts() ?? {};
    const log = createLogger(global.logLevel ?? "info", { pretty: global.logFormat ? global.logFormat === "pretty" : undefined });
    const args = cmd.args.length ? cmd.args : ((opts.__inputs as string[] | undefined) ?? []);
    const mod = await load();
    await mod.run(opts, args, log);
  };
}

let gracefulStop: (() => void) | undefined;

/**
 * Long jobs that can stop cleanly (pretrain saves a checkpoint) register here: the first SIGINT or
 * SIGTERM calls `stop`, a second one exits at once. Other commands exit on the first signal.
 */
export function onGracefulStop(stop: (() => void) | undefined): void {
  gracefulStop = stop;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted || !gracefulStop) {
      if (!interrupted) process.stderr.write("\ngm: interrupted; finished units are kept and a re-run resumes\n");
      process.exit(ExitCode.interrupted);
    }
    interrupted = true;
    process.stderr.write(`\ngm: ${signal}: finishing the current step and saving a checkpoint (send it again to quit at once)\n`);
    gracefulStop();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version print themselves and exit 0; parse errors were printed by commander
      process.exit(e.exitCode === 0 ? 0 : ExitCode.usage);
    }
    const known = isGmError(e) ? e : asOutputError(e);
    if (known) {
      process.stderr.write(`gm: error: ${known.message}\n`);
      process.exit(known.exitCode);
    }
    const err = e as Error;
    process.stderr.write(`gm: internal error: ${err?.message ?? String(e)}\n`);
    if (process.env.GM_DEBUG) process.stderr.write(`${err?.stack}\n`);
    else process.stderr.write("gm: set GM_DEBUG=1 for the stack trace; please report this\n");
    process.exit(ExitCode.internal);
  }
}
