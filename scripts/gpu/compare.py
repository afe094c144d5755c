#!/usr/bin/env python3
"""The record of one device-check run: gm_gpu_train_bench (bf16 with the recurrent and with the SSD
scan where both ran, and fp32 when it ran) beside the
PyTorch + mamba_ssm peer (scripts/bench/mamba_ssm_peer.py) and the scan kernels' bandwidth, as
markdown for docs/benchmarks.md, with the issue's targets (2x the peer per sample, 40% MFU).

    python3 scripts/gpu/compare.py OUT/results.txt [OUT/peer.json]

results.txt holds '### name' headers, each followed by that program's JSON lines (device-check.sh).
Standard library only: it runs on the GPU machine's python3.
"""
import json
import sys


def sections(path):
    out, name = {}, None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("### "):
                name = line[4:].strip()
                out[name] = []
            elif name and line.startswith("{"):
                try:
                    out[name].append(json.loads(line))
                except ValueError:
                    pass
    return out


def pick(lines, key, value=None):
    for x in lines:
        if key in x and (value is None or x[key] == value):
            return x
    return None


def fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}g}"


def main():
    res = sections(sys.argv[1])
    peer = None
    if len(sys.argv) > 2:
        try:
            with open(sys.argv[2]) as f:
                lines = [json.loads(l) for l in f if l.startswith("{")]
            peer = lines[-1] if lines and "error" not in lines[-1] else None
        except (OSError, ValueError):
            peer = None
    rows, bf16_results = [], []
    # (label, section, required): the SSD row appears only where device-check ran it
    runs = [("bf16", "train_bench_bf16", True), ("bf16", "train_bench_bf16_ssd", False), ("fp32", "train_bench_fp32", True)]
    for dtype, name, required in runs:
        if name not in res and not required:
            continue
        lines = res.get(name, [])
        dev, plan, r = pick(lines, "device"), pick(lines, "config"), pick(lines, "result")
        scan = (plan or {}).get("scan", "ssd" if name.endswith("_ssd") else "recurrent")
        if not r:
            err = pick(lines, "error")
            rows.append(f"| {dtype} | {scan} | not measured: {err['error'] if err else 'no result line'} |")
            continue
        if dtype == "bf16":
            bf16_results.append((scan, r))
        speed = peer["seconds_per_sample"] / r["train_seconds_per_sample"] if peer and dtype == "bf16" else None
        speed_fb = peer["fb_seconds_per_sample"] / r["fb_seconds_per_sample"] if peer and dtype == "bf16" else None
        mfu = r.get("mfu")
        rows.append(
            f"| {dev['device']} (cc {dev['cc']}, {dev['memory_gib']} GiB) | {dtype} | {scan} | {plan['length']} | {plan['batch']} "
            f"| {fmt(r['train_seconds_per_sample'])} | {round(r['tokens_per_second'])} | {fmt(r['tflops'], 3)} "
            f"| {'n/a' if mfu is None else f'{100 * mfu:.1f}%'} of {dev['bf16_peak_tflops']} | {fmt(r['fb_seconds_per_sample'])} "
            f"| {fmt(r['vs_paper'], 3) + 'x' if r.get('vs_paper') else 'n/a'} | {fmt(peer['seconds_per_sample']) + ' (batch ' + str(peer['batch']) + ')' if peer and dtype == 'bf16' else 'n/a'} "
            f"| {fmt(speed, 3) + 'x' if speed else 'n/a'} ({fmt(speed_fb, 3) + 'x' if speed_fb else 'n/a'} fwd+bwd) "
            f"| {r['peak_allocated_bytes'] / 2**30:.2f} GiB |"
        )
    print("| GPU | dtype | scan | L | batch | train s/sample | tokens/s | TFLOP/s | MFU (of TFLOP/s bf16 peak) | fwd+bwd s/sample "
          "| vs paper 0.1284 (A100) | PyTorch + mamba_ssm s/sample | gm speed-up train (fwd+bwd) | allocator peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if peer:
        print(f"\nPeer: {peer['impl']}, torch {peer['torch']}, mamba_ssm {peer['mamba_ssm']}, path {peer.get('path')}, "
              f"peak memory {peer['peak_memory_bytes'] / 2**30:.2f} GiB.")
    else:
        print("\nPeer: PyTorch + mamba_ssm did not run (see peer.json / stderr.txt).")
    scan = [x for x in res.get("gpu_scan_bench", []) if "kernel" in x]
    for x in scan:
        print(f"- scan {x['kernel']} {x['pass']} {x['dtype']}: {x['gbs']} GB/s, {100 * x['fraction_of_peak']:.0f}% of {x['peak_gbs']} GB/s")
    if bf16_results:  # the targets on the faster bf16 scan
        scan, r = min(bf16_results, key=lambda sr: sr[1]["train_seconds_per_sample"])
        met = lambda ok: "met" if ok else "NOT met"
        s = peer["seconds_per_sample"] / r["train_seconds_per_sample"] if peer else None
        print(f"\nTargets ({scan} scan, the faster bf16 run): >= 2x PyTorch + mamba_ssm: {'not measured' if s is None else met(s >= 2)}; "
              f">= 40% MFU: {'not measured' if r.get('mfu') is None else met(r['mfu'] >= 0.4)}.")

if __name__ == "__main__":
    main()
