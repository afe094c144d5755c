#!/usr/bin/env python3
"""Runs onnx's own checker (full_check: schemas, types and shape inference) on gm-exported models.

Usage: check_onnx.py MODEL.onnx [...]   prints one JSON object per model; exit 1 if any fails.
Used by packages/onnx/test/checker.test.ts with Debian's python3-onnx (apt-get install python3-onnx).
"""
import json
import sys

import onnx


def main(paths):
    ok = True
    for p in paths:
        m = onnx.load(p)
        rec = {"file": p, "ir_version": m.ir_version, "opset": [(o.domain, o.version) for o in m.opset_import],
               "nodes": len(m.graph.node), "initializers": len(m.graph.initializer),
               "inputs": [i.name for i in m.graph.input], "outputs": [o.name for o in m.graph.output],
               "metadata": sorted(p.key for p in m.metadata_props)}
        try:
            onnx.checker.check_model(m, full_check=True)
            rec["ok"] = True
        except Exception as e:  # noqa: BLE001 - report whatever the checker raised
            rec["ok"] = False
            rec["error"] = str(e).splitlines()[0][:500]
            ok = False
        print(json.dumps(rec))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
