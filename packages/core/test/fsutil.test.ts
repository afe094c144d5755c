import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeJsonAtomic, removeStaleTemporaries, tempNameFor, readJsonFile, GmError } from "@gm/core";
import { tmpDir } from "../../../tests/helpers/paths.js";

describe("atomic writes", () => {
  it("writes through a temporary and leaves no temporaries behind", () => {
    const dir = tmpDir("gm-core-");
    const target = path.join(dir, "a.json");
    writeJsonAtomic(target, { x: 1 });
    expect(JSON.parse(fs.readFileSync(target, "utf8"))).toEqual({ x: 1 });
    expect(fs.readdirSync(dir)).toEqual(["a.json"]);
  });
  it("removes stale temporaries of a crashed run", () => {
    const dir = tmpDir("gm-core-");
    fs.writeFileSync(tempNameFor(path.join(dir, "b.arrow")), "half");
    fs.writeFileSync(path.join(dir, "keep.txt"), "x");
    expect(removeStaleTemporaries(dir)).toBe(1);
    expect(fs.readdirSync(dir)).toEqual(["keep.txt"]);
  });
  it("reports missing and malformed JSON as GmError with the file name", () => {
    const dir = tmpDir("gm-core-");
    expect(() => readJsonFile(path.join(dir, "nope.json"), "vocabulary")).toThrow(/nope\.json: vocabulary not found/);
    fs.writeFileSync(path.join(dir, "bad.json"), "{");
    try {
      readJsonFile(path.join(dir, "bad.json"));
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(GmError);
      expect((e as GmError).exitCode).toBe(3);
    }
  });
});

describe("output errors", () => {
  it("maps write failures to exit code 4 with the path, and leaves other errors alone", async () => {
    const { asOutputError, deserializeError, serializeError } = await import("@gm/core");
    const e = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC", path: "/data/pre/cells/x.arrow" });
    // as it arrives from a worker thread
    const back = asOutputError(deserializeError(serializeError(e)));
    expect(back?.exitCode).toBe(4);
    expect(back?.message).toBe("/data/pre/cells/x.arrow: cannot write (no space left on the device); free space or choose another --out");
    expect(asOutputError(new Error("boom"))).toBeUndefined();
    expect(asOutputError(Object.assign(new Error("x"), { code: "ENOENT" }))).toBeUndefined();
  });
});
