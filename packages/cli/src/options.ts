import { InvalidArgumentError } from "commander";

export function int(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

export function positive(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a positive number`);
    return n;
  };
}

export function list(v: string, prev: string[] = []): string[] {
  return [...prev, ...v.split(",").map((s) => s.trim()).filter(Boolean)];
}

/** Coerce config-file values (which bypass commander's parsers) to numbers. */
export function num(v: unknown, name: string): number {
  const n = typeof v === "number" ? v : Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
  return n;
}

/** The cleaning options of preprocess and tokenize, from parsed flags / config values. */
export function cleaningSettings(o: Record<string, unknown>) {
  return {
    countsLayer: o.countsLayer as string | undefined,
    geneIdColumn: o.geneIdColumn as string | undefined,
    geneMap: o.geneMap as string | undefined,
    minGenes: num(o.minGenes, "--min-genes"),
    targetSum: num(o.targetSum, "--target-sum"),
    allowNonInteger: Boolean(o.allowNonInteger),
    unitCells: num(o.unitCells, "--unit-cells"),
    workers: num(o.workers, "--workers"),
  };
}
