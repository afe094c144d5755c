/**
 * A small builder for ONNX graphs: nodes with generated unique names, initializers (float32, or
 * float16 stored + Cast for half-precision exports), cached constants and shape helpers. Every
 * method returns the name of the value it produced, so model code reads like the forward pass.
 */
import { AttrType, DataType, valueInfo, type AttrMsg, type Dim, type GraphMsg, type NodeMsg, type TensorMsg } from "./proto.js";

export type Attr = { f: number } | { i: number } | { ints: number[] } | { floats: number[] } | { s: string } | { g: GraphMsg };

function attribute(name: string, a: Attr): AttrMsg {
  if ("f" in a) return { name, type: AttrType.FLOAT, f: a.f };
  if ("i" in a) return { name, type: AttrType.INT, i: a.i };
  if ("ints" in a) return { name, type: AttrType.INTS, ints: a.ints };
  if ("floats" in a) return { name, type: AttrType.FLOATS, floats: a.floats };
  if ("s" in a) return { name, type: AttrType.STRING, s: new TextEncoder().encode(a.s) };
  return { name, type: AttrType.GRAPH, g: a.g };
}

/** float32 -> IEEE half bits, round to nearest even (Node 20 has no Float16Array). */
export function toFloat16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(Float32Array.from(src).buffer);
  const out = new Uint16Array(src.length);
  for (let k = 0; k < bits.length; k++) {
    const x = bits[k];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[k] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 31) {
      out[k] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[k] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && h & 1)) h++;
      out[k] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry rolls into the exponent, as it should
    out[k] = sign | h;
  }
  return out;
}

export function fromFloat16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export class GraphBuilder {
  readonly nodes: NodeMsg[] = [];
  readonly initializers: TensorMsg[] = [];
  readonly inputs: GraphMsg["input"] = [];
  readonly outputs: GraphMsg["output"] = [];
  private readonly used = new Set<string>();
  private readonly constants = new Map<string, string>();
  private scopes: string[] = [];

  /** half: checkpoint weights are stored as float16 and cast to float32 once (ORT folds the Cast). */
  constructor(
    readonly name: string,
    private readonly half = false,
    private readonly prefix = "",
  ) {}

  /** A builder for a subgraph (Scan body): shares nothing but the naming prefix. */
  subgraph(name: string): GraphBuilder {
    return new GraphBuilder(name, this.half, `${this.prefix}${this.scopePath()}${name}/`);
  }

  build(doc?: string): GraphMsg {
    return { name: this.name, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs, ...(doc ? { doc_string: doc } : {}) };
  }

  /** Runs f with node names prefixed by `scope/` (readable graphs in Netron and in ORT profiles). */
  scope<T>(scope: string, f: () => T): T {
    this.scopes.push(scope);
    try {
      return f();
    } finally {
      this.scopes.pop();
    }
  }

  private scopePath(): string {
    return this.scopes.map((s) => s + "/").join("");
  }

  fresh(hint: string): string {
    const base = `${this.prefix}${this.scopePath()}${hint}`;
    let name = base;
    for (let k = 1; this.used.has(name); k++) name = `${base}_${k}`;
    this.used.add(name);
    return name;
  }

  input(name: string, elemType: number, shape: Dim[]): string {
    this.used.add(name);
    this.inputs.push(valueInfo(name, elemType, shape));
    return name;
  }

  /** Declares `value` as a graph output under `name` (an Identity when the names differ). */
  output(name: string, value: string, elemType: number, shape?: Dim[]): void {
    if (value !== name) this.nodes.push({ op_type: "Identity", input: [value], output: [name], name: this.fresh(`${name}/Identity`), attribute: [] });
    this.outputs.push(valueInfo(name, elemType, shape));
  }

  /** One node; returns its outputs' names (n of them). */
  opN(type: string, inputs: string[], n: number, attrs: Record<string, Attr> = {}, hint = type): string[] {
    const name = this.fresh(hint);
    const outputs = Array.from({ length: n }, (_, k) => (n === 1 ? name : `${name}:${k}`));
    for (const o of outputs) this.used.add(o);
    this.nodes.push({ op_type: type, input: inputs, output: outputs, name, attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)) });
    return outputs;
  }

  op(type: string, inputs: string[], attrs: Record<string, Attr> = {}, hint = type): string {
    return this.opN(type, inputs, 1, attrs, hint)[0];
  }

  private tensor(name: string, dataType: number, dims: number[], raw: Uint8Array): string {
    this.used.add(name);
    this.initializers.push({ name, dims, data_type: dataType, raw_data: raw });
    return name;
  }

  /** A model weight (float32; float16 + Cast in a half-precision export). */
  weight(name: string, data: Float32Array, dims: number[]): string {
    if (this.used.has(name)) return name; // shared by several layers (the combine gate)
    if (!this.half) return this.tensor(name, DataType.FLOAT, dims, bytes(Float32Array.from(data)));
    const stored = this.tensor(`${name}.fp16`, DataType.FLOAT16, dims, bytes(toFloat16(data)));
    this.nodes.push({ op_type: "Cast", input: [stored], output: [name], name: this.fresh(`${name}/Cast`), attribute: [attribute("to", { i: DataType.FLOAT })] });
    this.used.add(name);
    return name;
  }

  /** A float32 constant (cached by value and shape; never stored in half precision). */
  constF(values: number[] | Float32Array, dims: number[] = values.length === 1 ? [] : [values.length]): string {
    const key = `f:${dims.join("x")}:${Array.from(values).join(",")}`;
    const hit = this.constants.get(key);
    if (hit) return hit;
    const name = this.tensor(this.fresh("const_f"), DataType.FLOAT, dims, bytes(Float32Array.from(values)));
    this.constants.set(key, name);
    return name;
  }

  /** An int64 constant (shapes, axes, indices). */
  constI(values: number[], dims: number[] = values.length === 1 ? [] : [values.length]): string {
    const key = `i:${dims.join("x")}:${values.join(",")}`;
    const hit = this.constants.get(key);
    if (hit) return hit;
    const name = this.tensor(this.fresh("const_i"), DataType.INT64, dims, bytes(BigInt64Array.from(values.map((v) => BigInt(v)))));
    this.constants.set(key, name);
    return name;
  }

  // ----- helpers over common op patterns -----

  /** A 1-element int64 tensor holding dimension `axis` of x (Shape with start/end, opset 15). */
  dim(x: string, axis: number): string {
    return this.op("Shape", [x], { start: { i: axis }, end: { i: axis === -1 ? 2 ** 31 - 1 : axis + 1 } }, "dim");
  }

  unsqueeze(x: string, axes: number[]): string {
    return this.op("Unsqueeze", [x, this.constI(axes, [axes.length])]);
  }

  squeeze(x: string, axes: number[]): string {
    return this.op("Squeeze", [x, this.constI(axes, [axes.length])]);
  }

  reshape(x: string, shape: number[] | string): string {
    return this.op("Reshape", [x, typeof shape === "string" ? shape : this.constI(shape, [shape.length])]);
  }

  transpose(x: string, perm: number[]): string {
    return this.op("Transpose", [x], { perm: { ints: perm } });
  }

  concat(xs: string[], axis: number): string {
    return this.op("Concat", xs, { axis: { i: axis } });
  }

  split(x: string, sizes: number[], axis: number): string[] {
    return this.opN("Split", [x, this.constI(sizes, [sizes.length])], sizes.length, { axis: { i: axis } });
  }

  /** Splits axis into `n` equal parts (opset 13-17 Split without sizes). */
  splitEqual(x: string, n: number, axis: number): string[] {
    return this.opN("Split", [x], n, { axis: { i: axis } });
  }

  add(a: string, b: string): string {
    return this.op("Add", [a, b]);
  }
  sub(a: string, b: string): string {
    return this.op("Sub", [a, b]);
  }
  mul(a: string, b: string): string {
    return this.op("Mul", [a, b]);
  }
  div(a: string, b: string): string {
    return this.op("Div", [a, b]);
  }
  matmul(a: string, b: string): string {
    return this.op("MatMul", [a, b]);
  }
  exp(x: string): string {
    return this.op("Exp", [x]);
  }
  sigmoid(x: string): string {
    return this.op("Sigmoid", [x]);
  }
  silu(x: string): string {
    return this.mul(x, this.sigmoid(x));
  }

  /** y = x W^T (+ b): the weight is stored transposed ([in, out]) so MatMul needs no Transpose node. */
  linear(x: string, name: string, w: Float32Array, outDim: number, inDim: number, bias?: { name: string; data: Float32Array }): string {
    if (this.used.has(`${name}^T`)) return bias ? this.add(this.matmul(x, `${name}^T`), this.weight(bias.name, bias.data, [outDim])) : this.matmul(x, `${name}^T`);
    const wt = new Float32Array(w.length);
    for (let o = 0; o < outDim; o++) for (let i = 0; i < inDim; i++) wt[i * outDim + o] = w[o * inDim + i];
    const y = this.matmul(x, this.weight(`${name}^T`, wt, [inDim, outDim]));
    return bias ? this.add(y, this.weight(bias.name, bias.data, [outDim])) : y;
  }

  /** RMSNorm over the last axis in the pattern ORT fuses (Pow, ReduceMean, Add, Sqrt, Div, Mul). */
  rmsnorm(x: string, w: string, eps: number): string {
    const ms = this.op("ReduceMean", [this.op("Pow", [x, this.constF([2])])], { axes: { ints: [-1] }, keepdims: { i: 1 } });
    const rms = this.op("Sqrt", [this.add(ms, this.constF([eps]))]);
    return this.mul(this.div(x, rms), w);
  }
}
