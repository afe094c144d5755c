/**
 * The ONNX file format through protobufjs: the subset of onnx/onnx.proto (proto2, field numbers as
 * upstream) that a model gm writes uses, an encoder, and a metadata reader that skips the graph so
 * `gm embed`/`gm predict` can read the vocabulary of a multi-hundred-megabyte model without decoding
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
 * The metadata_props of an .onnx file, read by walking the ModelProto's top-level fields and
 * skipping the graph (field 7), so the weights are never decoded.
 */
export function readMetadataProps(file: string): Map<string, string> {
  if (!fs.existsSync(file)) throw inputError(file, "ONNX model not found; export one with gm export --onnx");
  const bytes = fs.readFileSync(file);
  const props = new Map<string, string>();
  try {
    const r = protobuf.Reader.create(bytes);
    let sawGraph = false;
    while (r.pos < r.len) {
      const tag = r.uint32();
      const field = tag >>> 3;
      if (field === 14) {
        const end = r.uint32() + r.pos;
        let key = "";
        let value = "";
        while (r.pos < end) {
          const t = r.uint32();
          if (t >>> 3 === 1) key = r.string();
          else if (t >>> 3 === 2) value = r.string();
          else r.skipType(t & 7);
        }
        props.set(key, value);
      } else {
        if (field === 7) sawGraph = true;
        r.skipType(tag & 7);
      }
    }
    if (!sawGraph) throw new Error("no graph");
  } catch (e) {
    throw inputError(file, `is not a readable ONNX model (${(e as Error).message}); export one with gm export --onnx`);
  }
  return props;
}
