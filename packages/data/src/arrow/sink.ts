/**
 * Streaming Arrow IPC writers to a file descriptor. apache-arrow's writers buffer everything in an
 * in-memory queue unless piped to an async stream; a synchronous sink keeps memory bounded to one
 * record batch and lets us know the byte offset of every message (for the shard index).
 */
import * as fs from "node:fs";
import { AsyncByteQueue, RecordBatchFileWriter, RecordBatchStreamWriter, Table, type RecordBatch, type Schema } from "apache-arrow";

class FdSink extends AsyncByteQueue {
  bytes = 0;
  constructor(private readonly fd: number) {
    super();
  }
  override write(value: unknown): void {
    const buf = value as Uint8Array;
    if (buf.byteLength === 0) return;
    let off = 0;
    while (off < buf.byteLength) off += fs.writeSync(this.fd, buf, off, buf.byteLength - off);
    this.bytes += buf.byteLength;
  }
  override close(): void {}
}

export interface BatchLocation {
  /** Byte offset of the record-batch message (continuation marker) in the file. */
  offset: number;
  /** Message length in bytes (metadata + body). */
  length: number;
  rows: number;
}

export class ArrowFileSink {
  private readonly fd: number;
  private readonly sink: FdSink;
  private readonly writer: RecordBatchStreamWriter | RecordBatchFileWriter;
  private readonly schemaBytes: number;
  readonly batches: BatchLocation[] = [];
  rows = 0;

  constructor(
    readonly path: string,
    readonly schema: Schema,
    readonly format: "stream" | "file",
  ) {
    this.fd = fs.openSync(path, "w");
    this.sink = new FdSink(this.fd);
    this.writer = format === "stream" ? new RecordBatchStreamWriter() : new RecordBatchFileWriter();
    this.writer.reset(this.sink as never, schema);
    // Size of the leading schema message (the file format also has 8 bytes of magic before it).
    const probe = RecordBatchStreamWriter.writeAll(new Table(schema)).toUint8Array(true);
    this.schemaBytes = probe.byteLength - 8 + (format === "file" ? 8 : 0);
  }

  write(batch: RecordBatch): void {
    const before = this.sink.bytes;
    this.writer.write(batch);
    const start = this.batches.length === 0 ? Math.max(before, this.schemaBytes) : before;
    this.batches.push({ offset: start, length: this.sink.bytes - start, rows: batch.numRows });
    this.rows += batch.numRows;
  }

  get bytes(): number {
    return this.sink.bytes;
  }

  close(): void {
    this.writer.finish();
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
  }

  abort(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
    fs.rmSync(this.path, { force: true });
  }
}
