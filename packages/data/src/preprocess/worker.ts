/** Worker thread for `gm preprocess`: processes units, keeping input files open between units. */
import { serveTasks } from "@gm/core";
import type { CellFile } from "../types.js";
import { openCellFile } from "../plan.js";
import { processUnit, type UnitTask, type UnitResult } from "./unit.js";

let open: { path: string; file: CellFile } | undefined;

serveTasks<UnitTask, UnitResult>(async (task, progress) => {
  if (!open || open.path !== task.plan.path) {
    open?.file.close();
    open = { path: task.plan.path, file: await openCellFile(task.plan.path) };
  }
  return processUnit(open.file, task, progress);
}, { onShutdown: () => open?.file.close() });
