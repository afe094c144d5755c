import * as fs from "node:fs";
import * as path from "node:path";
import { RecordBatchStreamReader } from "apache-arrow";
import { inputError } from "@gm/core";

export interface TokenizedCell {
  ids: Int32Array;
  /** Values of the requested kept columns (e.g. cell_type), by name. */
  columns: Record<string, unknown>;
}

/**
 * The cells of a `gm tokenize` output folder (Hugging Face datasets layout), in order. A generator,
 * so a caller that needs a few cells stops early; each stream shard is read one at a time.
 */
export function* readTokenizedCells(dir: string, columns: string[] = []): Generator<TokenizedCell> {
  const stateFile = path.join(dir, "state.json");
  if (!fs.existsSync(stateFile)) throw inputError(dir, "not a tokenized dataset (no state.json); run gm tokenize first");
  const state = JSON.parse(fs.readFileSync(stateFile, "utf8")) as { _data_files: { filename: string }[] };
  for (const { filename } of state._data_files) {
    for (const batch of RecordBatchStreamReader.from(fs.readFileSync(path.join(dir, filename)))) {
      const ids = batch.getChild("input_ids")!;
      const cols = columns.map((c) => {
        const v = batch.getChild(c);
        if (!v) throw inputError(path.join(dir, filename), `no column ${c}; tokenize with --keep-columns ${c}`);
        return v;
      });
      for (let i = 0; i < batch.numRows; i++) {
        const values: Record<string, unknown> = {};
        columns.forEach((c, k) => (values[c] = cols[k].get(i)));
        yield { ids: Int32Array.from(ids.get(i)!.toArray() as Int32Array), columns: values };
      }
    }
  }
}
