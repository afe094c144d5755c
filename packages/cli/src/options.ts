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
