/**
 * Run configs: a JSON file whose keys are a command's option names (camelCase or --kebab-case).
 * Precedence: command-line flag > config file > built-in default. Unknown keys are an error, so a typo
 * never silently falls back to a default.
 */
import type { Command } from "commander";
import { readJsonFile, usageError } from "@gm/core";

const camel = (s: string) => s.replace(/^-+/, "").replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

export function applyConfig(cmd: Command, file: string | undefined): Record<string, unknown> {
  const opts = cmd.opts() as Record<string, unknown>;
  if (!file) return opts;
  const cfg = readJsonFile<Record<string, unknown>>(file, "config file");
  if (!cfg || typeof cfg !== "object" || Array.isArray(cfg)) throw usageError(`${file}: a config file must hold a JSON object`);
  const known = new Map(cmd.options.map((o) => [o.attributeName(), o]));
  const args: string[] = [];
  for (const [rawKey, value] of Object.entries(cfg)) {
    const key = camel(rawKey);
    if (key === "config") continue;
    if (key === "inputs" || key === "input") {
      if (!Array.isArray(value) && typeof value !== "string") throw usageError(`${file}: '${rawKey}' must be a path or a list of paths`);
      args.push(...(Array.isArray(value) ? value.map(String) : [value]));
      continue;
    }
    const opt = known.get(key);
    if (!opt) throw usageError(`${file}: unknown key '${rawKey}' for gm ${cmd.name()} (known: ${[...known.keys()].filter((k) => k !== "config").join(", ")})`);
    const source = cmd.getOptionValueSource(key);
    if (source === "cli" || source === "env") continue;
    opts[key] = value;
  }
  if (args.length && Array.isArray(cmd.args) && cmd.args.length === 0) opts.__inputs = args;
  return opts;
}
