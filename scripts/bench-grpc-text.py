#!/usr/bin/env python3
"""Texts through the gRPC service with the real embedder: Train on documents under the data
root, then Assign held-out documents as texts, timed, against what `dekm train` gives on the
same documents.

    cargo build --release -p dekm-cli && scripts/fetch-minilm.sh
    pip install grpcio grpcio-tools numpy scikit-learn
    python scripts/bench-grpc-text.py --corpus-tab 20newsgroups-test.tab --work /tmp/gt

It writes WORK/data/news.jsonl (--train posts drawn with a seed, text and group) and
WORK/held.jsonl (--held other posts), starts `dekm serve --embedder` on a free port with the
data root WORK/data, trains k = 20 over gRPC (progress printed: texts embedded, then epochs),
assigns the held-out posts as texts in requests of --request texts, and prints the Train
metrics, the Assign throughput and the held-out ACC, then the same training through
`dekm train` for comparison. Threads: RAYON_NUM_THREADS (default 2) for both.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from yardstick import acc, read_orange_tab  # noqa: E402

ROOT = os.path.join(HERE, "..")
DEKM = os.path.join(ROOT, "target", "release", "dekm")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--corpus-tab", required=True)
    ap.add_argument("--work", default="grpc-text-bench")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--held", type=int, default=500)
    ap.add_argument("--request", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    gen = os.path.join(a.work, "pb")
    os.makedirs(gen, exist_ok=True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "proto"),
                    f"--python_out={gen}", f"--grpc_python_out={gen}",
                    os.path.join(ROOT, "proto", "dekm", "v1", "dekm.proto")], check=True)
    sys.path.insert(0, gen)
    import grpc
    from dekm.v1 import dekm_pb2 as pb, dekm_pb2_grpc as rpc

    posts = list(zip(*read_orange_tab(a.corpus_tab)))
    groups = sorted({g for _, g in posts})
    rng = np.random.default_rng(a.seed)
    pick = rng.permutation(len(posts))[: a.train + a.held]
    data = os.path.join(a.work, "data")
    os.makedirs(data, exist_ok=True)
    train = [posts[i] for i in pick[: a.train]]
    held = [posts[i] for i in pick[a.train:]]
    with open(os.path.join(data, "news.jsonl"), "w", encoding="utf-8") as f:
        for t, g in train:
            f.write(json.dumps({"text": t, "group": g}) + "\n")

    env = dict(os.environ, RAYON_NUM_THREADS=os.environ.get("RAYON_NUM_THREADS", "2"))
    port = free_port()
    store = tempfile.mkdtemp(dir=a.work, prefix="store-")
    log_path = os.path.join(a.work, "serve.log")
    log = open(log_path, "w")
    server = subprocess.Popen(
        [DEKM, "serve", "--addr", f"127.0.0.1:{port}", "--store", store,
         "--data-dir", data, "--embedder", a.model, "--device", "cpu", "--no-auth"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            with open(log_path) as f:
                if "listening on" in f.read():
                    break
            if server.poll() is not None:
                sys.exit(f"dekm serve stopped: see {log_path}")
            time.sleep(0.1)
        ch = grpc.insecure_channel(f"127.0.0.1:{port}",
                                   options=[("grpc.max_receive_message_length", 64 << 20)])
        training, assigner = rpc.TrainingStub(ch), rpc.AssignerStub(ch)

        t0 = time.perf_counter()
        last, embedded_at = None, None
        req = pb.TrainRequest(
            dataset=pb.DatasetRef(name="text:news.jsonl", label_column="group"),
            settings=pb.TrainSettings(k=len(groups), seed=a.seed), activate=True)
        for p in training.Train(req):
            if p.phase == pb.PHASE_LOADING and p.steps and p.step == p.steps and embedded_at is None:
                embedded_at = time.perf_counter() - t0
            last = p
        train_s = time.perf_counter() - t0
        if last.state != pb.JOB_STATE_SUCCEEDED:
            sys.exit(f"Train failed: {last.error}")
        m = last.metrics
        print(f"## gRPC Train on text:news.jsonl ({a.train} posts, k = {len(groups)}, seed {a.seed})")
        print(f"embedded in {embedded_at:.1f} s, job done in {train_s:.1f} s; "
              f"ACC {m.acc:.4f} NMI {m.nmi:.4f} ARI {m.ari:.4f}; model {last.model_id}")
        info = rpc.RegistryStub(ch).GetModel(pb.GetModelRequest(model_id=last.model_id))
        print(f"ModelInfo.embedder {info.embedder} sha256 {info.embedder_sha256[:16]}...")

        texts = [t for t, _ in held]
        t0 = time.perf_counter()
        clusters, truncated = [], 0
        for i in range(0, len(texts), a.request):
            r = assigner.Assign(pb.AssignRequest(texts=texts[i:i + a.request]))
            clusters += [x.cluster for x in r.assignments]
            truncated += len(r.truncated)
        assign_s = time.perf_counter() - t0
        y = np.array([groups.index(g) for _, g in held])
        print(f"## gRPC Assign: {len(texts)} held-out posts as texts, {a.request} per request")
        print(f"{assign_s:.1f} s ({len(texts) / assign_s:.1f} texts/s), {truncated} truncated; "
              f"held-out ACC {acc(y, np.array(clusters)):.4f}")
    finally:
        server.terminate()
        server.wait()
        log.close()

    out = os.path.join(a.work, "cli-model")
    t0 = time.perf_counter()
    r = subprocess.run(
        [DEKM, "--quiet", "train", "--dataset", "text:" + os.path.join(data, "news.jsonl"),
         "--label-col", "group", "--embedder", a.model, "--k", str(len(groups)),
         "--seed", str(a.seed), "--device", "cpu", "--out", out],
        env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr)
    with open(os.path.join(out, "metrics.json")) as f:
        cm = json.load(f)
    fin = cm["dekm"]
    print(f"## dekm train on the same file: {time.perf_counter() - t0:.1f} s; "
          f"ACC {fin['acc']:.4f} NMI {fin['nmi']:.4f} ARI {fin['ari']:.4f}")


if __name__ == "__main__":
    main()
