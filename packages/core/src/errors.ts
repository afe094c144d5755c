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

/** Errors crossing a worker_threads boundary lose their class; rebuild them. */
export function serializeError(e: unknown): { name: string; message: string; exitCode?: number; stack?: string } {
  if (e instanceof Error) {
    return { name: e.name, message: e.message, exitCode: (e as GmError).exitCode, stack: e.stack };
  }
  return { name: "Error", message: String(e) };
}

export function deserializeError(s: { name: string; message: string; exitCode?: number; stack?: string }): Error {
  if (s.name === "GmError" && typeof s.exitCode === "number") return new GmError(s.message, s.exitCode as ExitCodeValue);
  const err = new Error(s.message);
  err.name = s.name;
  if (s.stack) err.stack = s.stack;
  return err;
}
