/** Worker thread for `gm tokenize`. The token table arrives once, through workerData. */
import { workerData } from "node:worker_threads";
import { Bool, Float64, Utf8, type DataType } from "apache-arrow";
import { serveTasks } from "@gm/core";
import type { CellFile } from "../types.js";
import { openCellFile } from "../plan.js";
import { tokenizeUnit, tokenizedSchema, type TokenizeUnitResult, type TokenizeUnitTask } from "./unit.js";

interface TokenizeWorkerData {
  genes: string[];
  tokenIds: Int32Array;
  medians: Float64Array;
  keep: { name: string; type: string }[];
}

const data = workerData as TokenizeWorkerData;
const table = { index: new Map(data.genes.map((g, i) => [g, i])), tokenIds: data.tokenIds, medians: data.medians };
const typeOf = (t: string): DataType => (t === "Float64" ? new Float64() : t === "Bool" ? new Bool() : new Utf8());
const schema = tokenizedSchema(data.keep.map((k) => ({ name: k.name, type: typeOf(k.type) })));
let open: { path: string; file: CellFile } | undefined;

serveTasks<TokenizeUnitTask, TokenizeUnitResult>(async (task, progress) => {
  let file: CellFile | undefined;
  if (task.kind === "cells") {
    if (!open || open.path !== task.plan.path) {
      open?.file.close();
      open = { path: task.plan.path, file: await openCellFile(task.plan.path) };
    }
    file = open.file;
  }
  return tokenizeUnit(task, table, file, schema, progress);
}, { onShutdown: () => open?.file.close() });
