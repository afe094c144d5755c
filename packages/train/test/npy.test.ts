import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { writeNpy } from "@gm/train";

describe("writeNpy", () => {
  it("writes float32 and int32 arrays with a 64-byte aligned header (and numpy reads them when installed)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gm-npy-"));
    const f = path.join(dir, "f.npy"), i = path.join(dir, "i.npy");
    writeNpy(f, Float32Array.of(1.5, -2, 3, 4), [2, 2]);
    writeNpy(i, Int32Array.of(3, -1, 7), [3]);
    for (const [file, descr, shape] of [[f, "<f4", "(2, 2)"], [i, "<i4", "(3,)"]]) {
      const buf = fs.readFileSync(file);
      expect(buf.subarray(0, 6).toString("latin1")).toBe("\x93NUMPY");
      const len = buf.readUInt16LE(8);
      expect((10 + len) % 64).toBe(0);
      const header = buf.subarray(10, 10 + len).toString("latin1");
      expect(header).toContain(`'descr': '${descr}'`);
      expect(header).toContain(`'shape': ${shape}`);
    }
    const tail = Uint8Array.from(fs.readFileSync(i).subarray(-12));
    expect(Array.from(new Int32Array(tail.buffer))).toEqual([3, -1, 7]);
    const py = spawnSync("/usr/bin/python3", ["-c", `import numpy as np; a=np.load(${JSON.stringify(i)}); b=np.load(${JSON.stringify(f)}); print(a.dtype, a.tolist(), b.dtype, b.tolist())`], { encoding: "utf8" });
    if (py.status === 0) expect(py.stdout.trim()).toBe("int32 [3, -1, 7] float32 [[1.5, -2.0], [3.0, 4.0]]");
  });
});
