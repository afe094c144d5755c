import pino, { type Logger, type LevelWithSilent } from "pino";

export type { Logger };

export const LOG_LEVELS: LevelWithSilent[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

let root: Logger | undefined;

/**
 * The process-wide logger, writing to stderr so stdout stays free for command output (e.g.
 * `--dry-run` plans). Readable when stdout is a terminal, JSON lines otherwise (pipes, files, CI).
 */
export function createLogger(level: LevelWithSilent = "info", opts: { pretty?: boolean } = {}): Logger {
  const pretty = opts.pretty ?? Boolean(process.stdout.isTTY && process.stderr.isTTY);
  if (pretty) {
    const transport = pino.transport({
      target: "pino-pretty",
      options: { destination: 2, colorize: true, translateTime: "HH:MM:ss", ignore: "pid,hostname", hideObject: true },
    });
    root = pino({ level, base: undefined }, transport);
  } else {
    root = pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
  }
  return root;
}

export function getLogger(): Logger {
  if (!root) root = pino({ level: process.env.GM_LOG_LEVEL ?? "warn" }, pino.destination({ fd: 2, sync: true }));
  return root;
}

export function setLogger(l: Logger): void {
  root = l;
}
