/**
 * Exit codes of the `gm` binary (documented in docs/cli.md).
 * A GmError carries one human-readable line and the code the process exits with.
 */
export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  input: 3,
  output: 4,
  interrupted: 130,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export class GmError extends Error {
  readonly exitCode: ExitCodeValue;
  constructor(message: string, exitCode: ExitCodeValue = ExitCode.input) {
    super(message);
    this.name = "GmError";
    this.exitCode = exitCode;
  }
}

/** Bad input data: the message names the file, the field and what to do. */
export function inputError(file: string, message: string): GmError {
  return new GmError(`${file}: ${message}`, ExitCode.input);
}

export function usageError(message: string): GmError {
  return new GmError(message, ExitCode.usage);
}

export function isGmError(e: unknown): e is GmError {
  return e instanceof Error && (e as GmError).name === "GmError" && typeof (e as GmError).exitCode === "number";
}

type SerializedError = { name: string; message: string; exitCode?: number; stack?: string; code?: string; path?: string };

/** Errors crossing a worker_threads boundary lose their class; rebuild them. */
export function serializeError(e: unknown): SerializedError {
  if (e instanceof Error) {
    const x = e as NodeJS.ErrnoException & { exitCode?: number };
    return { name: e.name, message: e.message, exitCode: x.exitCode, stack: e.stack, code: x.code, path: x.path };
  }
  return { name: "Error", message: String(e) };
}

export function deserializeError(s: SerializedError): Error {
  if (s.name === "GmError" && typeof s.exitCode === "number") return new GmError(s.message, s.exitCode as ExitCodeValue);
  const err = new Error(s.message) as NodeJS.ErrnoException;
  err.name = s.name;
  if (s.stack) err.stack = s.stack;
  if (s.code) err.code = s.code;
  if (s.path) err.path = s.path;
  return err;
}

const OUTPUT_ERRNO = new Set(["EACCES", "EPERM", "ENOSPC", "EROFS", "EDQUOT", "EISDIR", "ENOTDIR", "EMFILE", "EFBIG"]);

/** A file-system failure while writing (no space, no permission, ...) as an output error, else undefined. */
export function asOutputError(e: unknown): GmError | undefined {
  const x = e as NodeJS.ErrnoException;
  if (!x || typeof x.code !== "string" || !OUTPUT_ERRNO.has(x.code)) return undefined;
  const what = x.code === "ENOSPC" || x.code === "EDQUOT" ? "no space left on the device" : x.code === "EACCES" || x.code === "EPERM" || x.code === "EROFS" ? "permission denied" : x.code;
  return new GmError(`${x.path ?? "output"}: cannot write (${what}); free space or choose another --out`, ExitCode.output);
}
