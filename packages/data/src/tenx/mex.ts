/**
 * Reader for the 10x Genomics MEX folder (Cell Ranger `filtered_feature_bc_matrix/`):
 *
 *   matrix.mtx[.gz]     MatrixMarket coordinate matrix, rows = features, columns = barcodes, 1-based
 *   features.tsv[.gz]   id <TAB> name <TAB> feature_type   (Cell Ranger 3+)
 *   genes.tsv[.gz]      id <TAB> name                      (Cell Ranger 2)
 *   barcodes.tsv[.gz]   one barcode per line
 *
 * Files may be gzipped or plain (detected from the content, not the name), and may share a prefix
 * such as GEO's `GSM123_matrix.mtx.gz`.
 *
 * MEX has no random access, so the whole matrix is loaded at open: entries are parsed straight into
 * typed arrays (gene Int32, barcode Int32, value Float32 = 12 bytes per nonzero at peak), then put in
 * cell order by an in-place counting sort, after which the barcode array is dropped: 8 bytes per
 * nonzero stay resident (e.g. 100M nonzeros: 1.2 GB while opening, 0.8 GB after). For inputs larger
 * than memory use Cell Ranger's .h5 output, which is read lazily.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { inputError, isGmError } from "@gm/core";
import type { CellFile, CsrBlock, MatrixSource } from "../types.js";
import { TenxCellFile, checkRowRange, featureFrame, sliceCsr, sortRows, DEFAULT_FEATURE_TYPE } from "./common.js";

const MATRIX_RE = /^(.*)matrix\.mtx(\.gz)?$/;

interface MexFiles {
  dir: string;
  matrix: string;
  features: string;
  barcodes: string;
}

function listDir(dir: string): string[] | null {
  try {
    return fs.readdirSync(dir);
  } catch {
    return null;
  }
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Whether `p` is a folder holding a 10x MEX matrix (`matrix.mtx` or `matrix.mtx.gz`, optionally prefixed). */
export function isTenxMexDir(p: string): boolean {
  if (!isDirectory(p)) return false;
  return (listDir(p) ?? []).some((n) => MATRIX_RE.test(n));
}

function pick(names: Set<string>, candidates: string[]): string | undefined {
  return candidates.find((c) => names.has(c));
}

/** Locate the three MEX files of a folder (or of the folder of a given matrix.mtx[.gz]). */
function resolveMexFiles(input: string): MexFiles {
  let dir = input;
  let only: string | undefined;
  let st: fs.Stats;
  try {
    st = fs.statSync(input);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw inputError(input, code === "ENOENT" ? "folder not found; check the path to the 10x MEX folder" : `cannot access (${code})`);
  }
  if (!st.isDirectory()) {
    if (!MATRIX_RE.test(path.basename(input))) {
      throw inputError(input, "is not a 10x MEX folder; pass the folder holding matrix.mtx.gz, features.tsv.gz and barcodes.tsv.gz");
    }
    dir = path.dirname(input);
    only = path.basename(input);
  }
  const entries = listDir(dir);
  if (!entries) throw inputError(dir, "cannot list the folder; check its permissions");
  const names = new Set(entries);
  const matrices = only ? [only] : entries.filter((n) => MATRIX_RE.test(n)).sort();
  if (matrices.length === 0) {
    throw inputError(dir, "matrix.mtx.gz (or matrix.mtx) not found; a 10x MEX folder holds matrix.mtx.gz, features.tsv.gz and barcodes.tsv.gz");
  }
  const prefixes = [...new Set(matrices.map((n) => MATRIX_RE.exec(n)![1]))];
  if (prefixes.length > 1) {
    throw inputError(dir, `holds several matrices (${matrices.join(", ")}); pass the path of the one to read`);
  }
  const p = prefixes[0];
  const matrix = pick(names, only ? [only] : [`${p}matrix.mtx.gz`, `${p}matrix.mtx`])!;
  const features = pick(names, [`${p}features.tsv.gz`, `${p}features.tsv`, `${p}genes.tsv.gz`, `${p}genes.tsv`]);
  if (!features) {
    throw inputError(dir, `${p}features.tsv.gz (or Cell Ranger 2 ${p}genes.tsv) not found next to ${matrix}; copy the complete Cell Ranger output folder`);
  }
  const barcodes = pick(names, [`${p}barcodes.tsv.gz`, `${p}barcodes.tsv`]);
  if (!barcodes) {
    throw inputError(dir, `${p}barcodes.tsv.gz (or ${p}barcodes.tsv) not found next to ${matrix}; copy the complete Cell Ranger output folder`);
  }
  return { dir, matrix: path.join(dir, matrix), features: path.join(dir, features), barcodes: path.join(dir, barcodes) };
}

function isGzip(file: string): boolean {
  const fd = fs.openSync(file, "r");
  try {
    const b = Buffer.alloc(2);
    return fs.readSync(fd, b, 0, 2, 0) === 2 && b[0] === 0x1f && b[1] === 0x8b;
  } finally {
    fs.closeSync(fd);
  }
}

/** One line for a stream error: truncated/corrupt gzip, unreadable file. */
function streamError(file: string, e: unknown): Error {
  if (isGmError(e)) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err?.code ?? "";
  if (code === "Z_BUF_ERROR" || /unexpected end of file/i.test(err?.message ?? "")) {
    return inputError(file, "gzip data is truncated (unexpected end of file); re-download or re-copy the file");
  }
  if (code.startsWith("Z_") || code.startsWith("ERR_ZLIB")) {
    return inputError(file, `gzip data is corrupt (${err.message}); re-download or re-copy the file`);
  }
  if (code === "ENOENT") return inputError(file, "file not found; check the path");
  if (code === "EISDIR") return inputError(file, "is a folder, expected a file");
  if (code) return inputError(file, `cannot read the file (${code}: ${err.message})`);
  return e instanceof Error ? e : new Error(String(e));
}

/** Stream a file's (decompressed) bytes; `onChunk` may throw to stop. */
async function streamBytes(file: string, onChunk: (chunk: Buffer) => void): Promise<void> {
  let gz: boolean;
  try {
    gz = isGzip(file);
  } catch (e) {
    throw streamError(file, e);
  }
  const src = fs.createReadStream(file, { highWaterMark: 1 << 20 });
  let input: NodeJS.ReadableStream = src;
  let gunzip: zlib.Gunzip | undefined;
  if (gz) {
    gunzip = zlib.createGunzip({ chunkSize: 1 << 18 });
    src.on("error", (e) => gunzip!.destroy(e));
    input = src.pipe(gunzip);
  }
  try {
    for await (const chunk of input) onChunk(chunk as Buffer);
  } catch (e) {
    throw streamError(file, e);
  } finally {
    gunzip?.destroy();
    src.destroy();
  }
}

/** All lines of a small text file (features, barcodes): tab-split, trailing empty line dropped. */
async function readTsv(file: string): Promise<string[][]> {
  const chunks: Buffer[] = [];
  await streamBytes(file, (c) => chunks.push(c));
  const text = Buffer.concat(chunks).toString("utf8");
  const lines = text.split("\n");
  while (lines.length > 0 && (lines[lines.length - 1] === "" || lines[lines.length - 1] === "\r")) lines.pop();
  if (lines.length > 0 && lines[0].charCodeAt(0) === 0xfeff) lines[0] = lines[0].slice(1);
  const rows: string[][] = new Array(lines.length);
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line === "") throw inputError(file, `line ${i + 1} is empty; each line must describe one entry — the file is damaged, re-export it`);
    rows[i] = line.split("\t");
  }
  return rows;
}

type Field = "integer" | "real" | "pattern";

/**
 * Streaming MatrixMarket coordinate parser. Bytes are parsed in place (no per-line strings for
 * entries); entries land in typed arrays allocated once the size line is known.
 */
class MtxParser {
  private leftover: Buffer | null = null;
  private lineNo = 0;
  private sawBanner = false;
  private field: Field = "integer";
  private sized = false;
  nRows = 0;
  nCols = 0;
  nnz = 0;
  count = 0;
  genes = new Int32Array(0);
  cells = new Int32Array(0);
  values = new Float32Array(0);

  constructor(
    private readonly file: string,
    private readonly expectRows: number,
    private readonly expectCols: number,
    private readonly featuresName: string,
    private readonly barcodesName: string,
  ) {}

  push(chunk: Buffer): void {
    const buf = this.leftover ? Buffer.concat([this.leftover, chunk]) : chunk;
    const last = buf.lastIndexOf(10);
    if (last < 0) {
      this.leftover = Buffer.from(buf);
      if (!this.sized && this.leftover.length > 1 << 20) this.fail(this.lineNo + 1, "header line is longer than 1 MiB; this is not a MatrixMarket file");
      return;
    }
    this.process(buf, last + 1);
    this.leftover = last + 1 < buf.length ? Buffer.from(buf.subarray(last + 1)) : null;
  }

  finish(): void {
    if (this.leftover && this.leftover.length > 0) {
      const buf = Buffer.concat([this.leftover, Buffer.from([10])]);
      this.leftover = null;
      this.process(buf, buf.length);
    }
    if (!this.sawBanner) this.fail(1, 'file is empty; expected a "%%MatrixMarket matrix coordinate integer general" header');
    if (!this.sized) this.fail(this.lineNo, 'no size line ("features barcodes nonzeros") after the header; the file is truncated or not a MatrixMarket file');
    if (this.count < this.nnz) {
      throw inputError(
        this.file,
        `truncated: the header declares ${this.nnz} entries but only ${this.count} were found; re-download or re-copy the file`,
      );
    }
  }

  private fail(line: number, message: string): never {
    throw inputError(this.file, `line ${line}: ${message}`);
  }

  private lineText(buf: Buffer, start: number): string {
    let e = buf.indexOf(10, start);
    if (e < 0) e = buf.length;
    const s = buf.toString("latin1", start, Math.min(e, start + 80)).replace(/\r$/, "");
    return e - start > 80 ? `${s}...` : s;
  }

  /** Parse complete lines buf[0, end) (end is just past a newline). */
  private process(buf: Buffer, end: number): void {
    let pos = 0;
    while (!this.sized && pos < end) {
      const nl = buf.indexOf(10, pos);
      const line = buf.toString("utf8", pos, nl).replace(/\r$/, "");
      pos = nl + 1;
      this.lineNo++;
      this.headerLine(line);
    }
    if (pos < end) this.entries(buf, pos, end);
  }

  private headerLine(line: string): void {
    if (!this.sawBanner) {
      this.sawBanner = true;
      const t = line.replace(/^\uFEFF/, "").trim().toLowerCase().split(/\s+/);
      const ok =
        t[0] === "%%matrixmarket" &&
        t[1] === "matrix" &&
        t[2] === "coordinate" &&
        ["integer", "real", "double", "pattern"].includes(t[3] ?? "") &&
        t[4] === "general" &&
        t.length === 5;
      if (!ok) {
        const shown = line.length > 80 ? `${line.slice(0, 80)}...` : line;
        this.fail(
          1,
          `header is "${shown.replace(/[^\x20-\x7e]/g, "?")}", expected "%%MatrixMarket matrix coordinate integer general" ` +
            `(or real); this is not a 10x MEX matrix — check the file`,
        );
      }
      this.field = t[3] === "pattern" ? "pattern" : t[3] === "integer" ? "integer" : "real";
      return;
    }
    const s = line.trim();
    if (s === "" || s.startsWith("%")) return;
    const m = /^(\d+)\s+(\d+)\s+(\d+)$/.exec(s);
    if (!m) this.fail(this.lineNo, `size line is "${s.slice(0, 80)}", expected three integers "features barcodes nonzeros"`);
    const rows = Number(m[1]);
    const cols = Number(m[2]);
    const nnz = Number(m[3]);
    if (rows !== this.expectRows || cols !== this.expectCols) {
      const transposed = rows === this.expectCols && cols === this.expectRows ? " (the matrix looks transposed: 10x MEX stores features as rows)" : "";
      this.fail(
        this.lineNo,
        `size line says ${rows} features x ${cols} barcodes but ${this.featuresName} has ${this.expectRows} lines and ` +
          `${this.barcodesName} has ${this.expectCols}${transposed}; the files do not belong together — copy them from one Cell Ranger run`,
      );
    }
    if (nnz > rows * cols) this.fail(this.lineNo, `declares ${nnz} nonzeros, more than ${rows} x ${cols} cells can hold; the file is corrupt`);
    try {
      this.genes = new Int32Array(nnz);
      this.cells = new Int32Array(nnz);
      this.values = new Float32Array(nnz);
    } catch {
      throw inputError(this.file, `${nnz} nonzeros do not fit in memory (about 12 bytes each while loading MEX); use Cell Ranger's .h5 output instead, which is read lazily`);
    }
    this.nRows = rows;
    this.nCols = cols;
    this.nnz = nnz;
    this.sized = true;
  }

  /** The hot loop: "row col value" lines, any whitespace run as separator. */
  private entries(buf: Buffer, pos: number, end: number): void {
    const { genes, cells, values, nRows, nCols, nnz } = this;
    const pattern = this.field === "pattern";
    let count = this.count;
    let lineNo = this.lineNo;
    while (pos < end) {
      lineNo++;
      const lineStart = pos;
      let c = buf[pos];
      while (c === 32 || c === 9) c = buf[++pos];
      if (c === 10 || c === 13 || c === 37 /* % */) {
        // blank line or a comment: skip
        pos = buf.indexOf(10, pos) + 1;
        continue;
      }
      // row
      let r = 0;
      let digits = 0;
      while (c >= 48 && c <= 57) {
        r = r * 10 + (c - 48);
        c = buf[++pos];
        digits++;
      }
      if (digits === 0 || (c !== 32 && c !== 9)) this.badLine(lineNo, buf, lineStart);
      while (c === 32 || c === 9) c = buf[++pos];
      // column
      let col = 0;
      digits = 0;
      while (c >= 48 && c <= 57) {
        col = col * 10 + (c - 48);
        c = buf[++pos];
        digits++;
      }
      if (digits === 0) this.badLine(lineNo, buf, lineStart);
      let v = 1;
      if (!pattern) {
        if (c !== 32 && c !== 9) this.badLine(lineNo, buf, lineStart);
        while (c === 32 || c === 9) c = buf[++pos];
        const vs = pos;
        v = 0;
        digits = 0;
        while (c >= 48 && c <= 57) {
          v = v * 10 + (c - 48);
          c = buf[++pos];
          digits++;
        }
        if (digits === 0 || (c !== 32 && c !== 9 && c !== 10 && c !== 13)) {
          // not a plain non-negative integer: sign, decimal point or exponent
          while (c !== 32 && c !== 9 && c !== 10 && c !== 13) c = buf[++pos];
          const text = buf.toString("latin1", vs, pos);
          v = Number(text);
          if (text === "" || Number.isNaN(v)) this.badLine(lineNo, buf, lineStart);
        }
      }
      while (c === 32 || c === 9 || c === 13) c = buf[++pos];
      if (c !== 10) this.badLine(lineNo, buf, lineStart);
      pos++;
      if (r < 1 || r > nRows) {
        this.count = count;
        this.fail(lineNo, `feature (row) index ${r} is outside 1..${nRows}; the matrix does not match ${this.featuresName} or is corrupt`);
      }
      if (col < 1 || col > nCols) {
        this.count = count;
        this.fail(lineNo, `barcode (column) index ${col} is outside 1..${nCols}; the matrix does not match ${this.barcodesName} or is corrupt`);
      }
      if (count >= nnz) this.fail(lineNo, `more entries than the ${nnz} declared in the size line; the file is corrupt`);
      genes[count] = r - 1;
      cells[count] = col - 1;
      values[count] = v;
      count++;
    }
    this.count = count;
    this.lineNo = lineNo;
  }

  private badLine(lineNo: number, buf: Buffer, lineStart: number): never {
    const what = this.field === "pattern" ? '"feature barcode"' : '"feature barcode value"';
    this.fail(lineNo, `expected ${what} numbers, found "${this.lineText(buf, lineStart)}"; the file is corrupt — re-download or re-copy it`);
  }
}

/** Put COO entries in barcode order (in-place counting sort); returns the CSR indptr over barcodes. */
function cooToCsrByCell(cells: Int32Array, genes: Int32Array, values: Float32Array, nCells: number): Float64Array {
  const nnz = cells.length;
  const indptr = new Float64Array(nCells + 1);
  let sorted = true;
  for (let k = 0; k < nnz; k++) {
    indptr[cells[k] + 1]++;
    if (k > 0 && cells[k] < cells[k - 1]) sorted = false;
  }
  for (let c = 0; c < nCells; c++) indptr[c + 1] += indptr[c];
  if (sorted) return indptr;
  // American-flag sort: every swap puts one entry into its final bucket.
  const next = indptr.slice(0, nCells);
  for (let b = 0; b < nCells; b++) {
    const stop = indptr[b + 1];
    let i = next[b];
    while (i < stop) {
      const c = cells[i];
      if (c === b) {
        i++;
        continue;
      }
      const j = next[c]++;
      cells[i] = cells[j];
      cells[j] = c;
      const g = genes[i];
      genes[i] = genes[j];
      genes[j] = g;
      const v = values[i];
      values[i] = values[j];
      values[j] = v;
    }
    next[b] = stop;
  }
  return indptr;
}

/**
 * Open a 10x MEX folder (or its matrix.mtx[.gz]). Loads the matrix into memory (see the module
 * comment for the cost); errors are GmErrors naming the file and the problem.
 */
export async function openTenxMex(dir: string): Promise<CellFile> {
  const files = resolveMexFiles(dir);
  const [featureRows, barcodeRows] = await Promise.all([readTsv(files.features), readTsv(files.barcodes)]);
  const ids: string[] = new Array(featureRows.length);
  const names: string[] = new Array(featureRows.length);
  const types: string[] = new Array(featureRows.length);
  for (let i = 0; i < featureRows.length; i++) {
    const f = featureRows[i];
    if (!f[0]) throw inputError(files.features, `line ${i + 1}: feature id (first column) is empty; expected "id<TAB>name<TAB>feature_type"`);
    ids[i] = f[0];
    names[i] = f.length > 1 ? f[1] : f[0];
    types[i] = f.length > 2 && f[2] !== "" ? f[2] : DEFAULT_FEATURE_TYPE;
  }
  const barcodes = barcodeRows.map((b) => b[0]);
  const featuresName = path.basename(files.features);
  const barcodesName = path.basename(files.barcodes);

  const parser = new MtxParser(files.matrix, ids.length, barcodes.length, featuresName, barcodesName);
  await streamBytes(files.matrix, (chunk) => parser.push(chunk));
  parser.finish();

  const nCells = barcodes.length;
  const nGenes = ids.length;
  let { cells, genes: indices, values: data } = parser;
  const indptr = cooToCsrByCell(cells, indices, data, nCells);
  cells = new Int32Array(0); // drop the barcode array: 8 bytes per nonzero stay
  parser.cells = cells;
  sortRows(indptr, nCells, indices, data, nGenes, (row, gene) => {
    throw inputError(
      files.matrix,
      `feature ${gene + 1} (${ids[gene]}) of barcode ${row + 1} (${barcodes[row]}) appears twice; the file is corrupt — re-export it`,
    );
  });

  const varFrame = featureFrame(ids, names, types, null);
  let released = false;
  const source: MatrixSource = {
    location: "matrix",
    layout: "mex",
    nCells,
    nGenes,
    readBlock(start: number, end: number): CsrBlock {
      if (released) throw new Error(`${files.dir}: file is closed`);
      checkRowRange(start, end, nCells);
      return sliceCsr(indptr, indices, data, start, end);
    },
  };
  return new TenxCellFile({
    path: dir,
    format: "10x-mex",
    nCells,
    var: varFrame,
    barcodes: (start, end) => barcodes.slice(start, end),
    matrices: new Map([["matrix", { source, var: varFrame }]]),
    close() {
      released = true;
      indices = new Int32Array(0);
      data = new Float32Array(0);
      parser.genes = indices;
      parser.values = data;
    },
  });
}
