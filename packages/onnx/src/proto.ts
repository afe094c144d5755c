/**
 * The ONNX file format through protobufjs: the subset of onnx/onnx.proto (proto2, field numbers as
 * upstream) that a model gm writes uses, an encoder, and a metadata reader that skips the graph so
 * `gm embed`/`gm predict` can read the vocabulary of a multi-hundred-megabyte model without reading
 * its weights.
 */
import * as fs from "node:fs";
import protobuf from "protobufjs";
import { inputError } from "@gm/core";

const ONNX_PROTO = `
syntax = "proto2";
package onnx;
message AttributeProto {
  enum AttributeType { UNDEFINED = 0; FLOAT = 1; INT = 2; STRING = 3; TENSOR = 4; GRAPH = 5; FLOATS = 6; INTS = 7; STRINGS = 8; TENSORS = 9; GRAPHS = 10; }
  optional string name = 1;
  optional float f = 2;
  optional int64 i = 3;
  optional bytes s = 4;
  optional TensorProto t = 5;
  optional GraphProto g = 6;
  repeated float floats = 7;
  repeated int64 ints = 8;
  repeated bytes strings = 9;
  optional AttributeType type = 20;
}
message ValueInfoProto { optional string name = 1; optional TypeProto type = 2; optional string doc_string = 3; }
message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  optional string name = 3;
  optional string op_type = 4;
  repeated AttributeProto attribute = 5;
  optional string doc_string = 6;
  optional string domain = 7;
}
message StringStringEntryProto { optional string key = 1; optional string value = 2; }
message OperatorSetIdProto { optional string domain = 1; optional int64 version = 2; }
message ModelProto {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  optional string producer_version = 3;
  optional string domain = 4;
  optional int64 model_version = 5;
  optional string doc_string = 6;
  optional GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
  repeated StringStringEntryProto metadata_props = 14;
}
message GraphProto {
  repeated NodeProto node = 1;
  optional string name = 2;
  repeated TensorProto initializer = 5;
  optional string doc_string = 10;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
  repeated ValueInfoProto value_info = 13;
}
message TensorProto {
  repeated int64 dims = 1;
  optional int32 data_type = 2;
  repeated float float_data = 4 [packed = true];
  repeated int32 int32_data = 5 [packed = true];
  repeated int64 int64_data = 7 [packed = true];
  optional string name = 8;
  optional bytes raw_data = 9;
}
message TensorShapeProto {
  message Dimension { optional int64 dim_value = 1; optional string dim_param = 2; }
  repeated Dimension dim = 1;
}
message TypeProto {
  message Tensor { optional int32 elem_type = 1; optional TensorShapeProto shape = 2; }
  optional Tensor tensor_type = 1;
}
`;

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, UINT8: 2, INT32: 6, INT64: 7, BOOL: 9, FLOAT16: 10 } as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

export const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7 } as const;

const root = protobuf.parse(ONNX_PROTO, { keepCase: true }).root;
const ModelProto = root.lookupType("onnx.ModelProto");

export interface TensorMsg {
  name: string;
  dims: number[];
  data_type: number;
  raw_data?: Uint8Array;
}
export interface AttrMsg {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: TensorMsg;
  g?: GraphMsg;
  floats?: number[];
  ints?: number[];
}
export interface NodeMsg {
  input: string[];
  output: string[];
  name: string;
  op_type: string;
  attribute: AttrMsg[];
  domain?: string;
}
/** A dimension: a size or a symbolic name ("batch"). */
export type Dim = number | string;
export interface ValueInfoMsg {
  name: string;
  type: { tensor_type: { elem_type: number; shape?: { dim: ({ dim_value: number } | { dim_param: string })[] } } };
}
export interface GraphMsg {
  name: string;
  node: NodeMsg[];
  initializer: TensorMsg[];
  input: ValueInfoMsg[];
  output: ValueInfoMsg[];
  doc_string?: string;
}
export interface ModelMsg {
  ir_version: number;
  producer_name: string;
  producer_version: string;
  doc_string?: string;
  graph: GraphMsg;
  opset_import: { domain: string; version: number }[];
  metadata_props: { key: string; value: string }[];
}

export function valueInfo(name: string, elemType: number, shape?: Dim[]): ValueInfoMsg {
  const dims = shape?.map((d) => (typeof d === "number" ? { dim_value: d } : { dim_param: d }));
  return { name, type: { tensor_type: { elem_type: elemType, ...(dims ? { shape: { dim: dims } } : {}) } } };
}

/** Serialises a model (protobuf binary, the .onnx file's bytes). */
export function encodeModel(m: ModelMsg): Uint8Array {
  const err = ModelProto.verify(m);
  if (err) throw new Error(`onnx model message: ${err}`);
  return ModelProto.encode(ModelProto.fromObject(m)).finish();
}

/** Full decode (tests and small models). */
export function decodeModel(bytes: Uint8Array): ModelMsg {
  return ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, bytes: Uint8Array, defaults: false, arrays: true }) as unknown as ModelMsg;
}

/**
 * The metadata_props of an .onnx file, read by walking the ModelProto's top-level fields straight
 * from the file and seeking past the graph (field 7): the weights are never read, whatever the
 * model's size.
 */
export function readMetadataProps(file: string): Map<string, string> {
  if (!fs.existsSync(file)) throw inputError(file, "ONNX model not found; export one with gm export --onnx");
  const props = new Map<string, string>();
  const fd = fs.openSync(file, "r");
  try {
    const size = fs.fstatSync(fd).size;
    const head = Buffer.alloc(20);
    let pos = 0;
    let sawGraph = false;
    // A varint at buf[at..]; numbers, not bitwise ops, so lengths above 2^31 stay exact.
    const varint = (buf: Buffer, at: number): [number, number] => {
      let v = 0;
      for (let k = 0, scale = 1; k < 10 && at + k < buf.length; k++, scale *= 128) {
        v += (buf[at + k] & 0x7f) * scale;
        if (!(buf[at + k] & 0x80)) return [v, k + 1];
      }
      throw new Error(`bad varint at byte ${pos}`);
    };
    while (pos < size) {
      const got = fs.readSync(fd, head, 0, head.length, pos);
      const [tag, tagLen] = varint(head.subarray(0, got), 0);
      const field = Math.floor(tag / 8);
      const wire = tag % 8;
      let at = pos + tagLen;
      if (wire === 0) at += varint(head.subarray(0, got), tagLen)[1];
      else if (wire === 1) at += 8;
      else if (wire === 5) at += 4;
      else if (wire === 2) {
        const [len, lenLen] = varint(head.subarray(0, got), tagLen);
        at += lenLen;
        if (field === 14) {
          const entry = Buffer.alloc(len);
          if (fs.readSync(fd, entry, 0, len, at) !== len) throw new Error("truncated metadata entry");
          const r = protobuf.Reader.create(entry);
          let key = "";
          let value = "";
          while (r.pos < r.len) {
            const t = r.uint32();
            if (t >>> 3 === 1) key = r.string();
            else if (t >>> 3 === 2) value = r.string();
            else r.skipType(t & 7);
          }
          props.set(key, value);
        }
        if (field === 7) sawGraph = true;
        at += len;
      } else throw new Error(`unknown wire type ${wire} at byte ${pos}`);
      if (at > size) throw new Error("truncated");
      pos = at;
    }
    if (!sawGraph) throw new Error("no graph");
  } catch (e) {
    throw inputError(file, `is not a readable ONNX model (${(e as Error).message}); export one with gm export --onnx`);
  } finally {
    fs.closeSync(fd);
  }
  return props;
}
