#!/usr/bin/env python3
"""Compares two directories written by scripts/record-runs.sh: every tensor of each
model.safetensors (SHA-256 of its bytes), the model metadata less its creation time, config.json
(a `dekm_lr` read as `finetune_lr`, its name before 2026-12-04; no `device`
read as the CPU), metrics.json less timings, and
the printed output less lines with timings or checksums. Exits 1 on any difference."""
import difflib
import hashlib
import json
import struct
import sys


def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    meta = json.loads(header.pop("__metadata__", {}).get("dekm.meta", "{}"))
    meta.pop("created_unix", None)
    out = {}
    for name, v in header.items():
        s, e = v["data_offsets"]
        out[name] = (v["dtype"], v["shape"], hashlib.sha256(data[s:e]).hexdigest())
    return out, meta


def untimed(d):
    d.pop("config", None)
    h = d.get("history", {})
    for k in ("pretrain_seconds", "dekm_seconds", "stage_seconds"):
        h.pop(k, None)
    for k in [k for k in d if "seconds" in k or k == "created_unix"]:
        d.pop(k)
    return d


def lines(path):
    keep = lambda l: not (" s " in l or l.rstrip().endswith(" s") or "ms" in l or "sha256" in l or "model:" in l)
    return [l.replace(path.rsplit("/", 2)[0], "OUT") for l in open(path) if keep(l)]


a, b = sys.argv[1], sys.argv[2]
same = True
for run in ["syn", "mnist", "idec", "demo"]:
    ta, ma = tensors(f"{a}/{run}/model.safetensors")
    tb, mb = tensors(f"{b}/{run}/model.safetensors")
    ca, cb = (json.load(open(f"{d}/{run}/config.json")) for d in (a, b))
    for c in (ca, cb):
        if "dekm_lr" in c:
            c["finetune_lr"] = c.pop("dekm_lr")
    # `device` is recorded since 2026-12-04; an older run was on the CPU.
    if ("device" in ca) != ("device" in cb):
        ca.setdefault("device", "cpu")
        cb.setdefault("device", "cpu")
    ja, jb = (untimed(json.load(open(f"{d}/{run}/metrics.json"))) for d in (a, b))
    checks = {"tensors": ta == tb, "metadata": ma == mb, "config.json": ca == cb, "metrics.json": ja == jb}
    same &= all(checks.values())
    print(run, f"{len(ta)} tensors;", ", ".join(f"{k} {'identical' if v else 'DIFFER'}" for k, v in checks.items()))
for log in ["syn.log", "mnist.log", "idec.log", "mnist-eval.log", "demo.log"]:
    la, lb = lines(f"{a}/{log}"), lines(f"{b}/{log}")
    same &= la == lb
    print(log, "identical (less timings and checksums)" if la == lb else "DIFFER")
    if la != lb:
        print("".join(difflib.unified_diff(la, lb)))
sys.exit(0 if same else 1)
