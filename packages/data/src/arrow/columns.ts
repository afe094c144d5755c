/** Arrow column builders straight from typed arrays (no per-value builder overhead). */
import { Bool, Field, Float32, Float64, Int32, Int64, List, Utf8, makeData, vectorFromArray, type Data, type DataType } from "apache-arrow";
import type { Column } from "../types.js";
import { columnValueAsString } from "../types.js";

export function int32Data(values: Int32Array): Data<Int32> {
  return makeData({ type: new Int32(), length: values.length, nullCount: 0, data: values });
}

export function int64Data(values: BigInt64Array): Data<Int64> {
  return makeData({ type: new Int64(), length: values.length, nullCount: 0, data: values });
}

export function float64Data(values: Float64Array): Data<Float64> {
  return makeData({ type: new Float64(), length: values.length, nullCount: 0, data: values });
}

export function float32Data(values: Float32Array): Data<Float32> {
  return makeData({ type: new Float32(), length: values.length, nullCount: 0, data: values });
}

/** List<Int32> from CSR-style offsets (length n + 1, offsets[0] may be non-zero) and values. */
export function listInt32Data(offsets: Int32Array, values: Int32Array): Data<List<Int32>> {
  const base = offsets[0];
  const off = base === 0 ? offsets : offsets.map((x) => x - base);
  const child = int32Data(values.subarray(base, offsets[offsets.length - 1]));
  return makeData({ type: new List(new Field("item", new Int32(), true)), length: offsets.length - 1, nullCount: 0, valueOffsets: off, child });
}

export function listFloat32Data(offsets: Int32Array, values: Float32Array): Data<List<Float32>> {
  const base = offsets[0];
  const off = base === 0 ? offsets : offsets.map((x) => x - base);
  const child = float32Data(values.subarray(base, offsets[offsets.length - 1]));
  return makeData({ type: new List(new Field("item", new Float32(), true)), length: offsets.length - 1, nullCount: 0, valueOffsets: off, child });
}

export function utf8Data(values: (string | null)[]): Data<Utf8> {
  return vectorFromArray(values, new Utf8()).data[0] as Data<Utf8>;
}

/** The Arrow type an obs column becomes: strings (categoricals decoded), float64 numbers, booleans. */
export function arrowTypeOfColumn(col: Column): DataType {
  switch (col.kind) {
    case "number":
      return new Float64();
    case "bool":
      return new Bool();
    default:
      return new Utf8();
  }
}

/** Select rows of an obs column into Arrow data of arrowTypeOfColumn(col). */
export function obsColumnData(col: Column, rows: Int32Array): Data {
  switch (col.kind) {
    case "number": {
      const out = new Float64Array(rows.length);
      for (let i = 0; i < rows.length; i++) out[i] = col.values[rows[i]];
      return float64Data(out);
    }
    case "bool": {
      const vals: (boolean | null)[] = new Array(rows.length);
      for (let i = 0; i < rows.length; i++) vals[i] = col.mask && col.mask[rows[i]] ? null : col.values[rows[i]] !== 0;
      return vectorFromArray(vals, new Bool()).data[0];
    }
    default: {
      const vals: (string | null)[] = new Array(rows.length);
      for (let i = 0; i < rows.length; i++) vals[i] = columnValueAsString(col, rows[i]);
      return utf8Data(vals);
    }
  }
}
