#!/usr/bin/env python3
"""Novelty protocol of issue 33 on MNIST / Fashion-MNIST, every score in one run.

For each held-out class c: the product is trained (k = 9) on the first N training images not of
class c and scores the 10,000 test images (`cargo run --example novelty`, which writes the
product's two calibrated scores with their flags: the neighbour score over the export's
references and the Mahalanobis distance, the reconstruction error and the kNN distance among
all training latents); here the
pixel baselines are computed on the same images: IsolationForest (scikit-learn, 200 trees) and
the distance to the 5th nearest training image. The held-out class is the anomaly.

Per score: AUROC, average precision, and recall and false-alarm rate at a threshold calibrated
on the training images alone (the product's scores: their own per-cluster thresholds at 0.998;
every other score: its 0.998 quantile over the training images, leave-one-out for kNN).

    v/bin/python scripts/bench-novelty.py --data-dir ../shared/data --dataset mnist \
        [--train-limit 10000] [--epochs 15] [--classes 0,1,...] [--work novelty/] [--skip-train]
"""
import argparse
import gzip
import os
import subprocess
import sys

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors

QUANTILE = 0.998
SCORES = ["knn", "mahalanobis", "distance", "reconstruction", "knn_latent", "iforest_pixels",
          "knn_pixels"]
# The product's calibrated scores and the column of their own flags.
OWN_FLAGS = {"mahalanobis": "flag", "knn": "flag_knn"}


def idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(root, name, prefix):
    d = os.path.join(root, name)
    files = os.listdir(d)
    pick = lambda stem: os.path.join(d, next(f for f in files if f.startswith(stem)))
    x = idx(pick(prefix + "-images")).reshape(-1, 784).astype(np.float32) / 255.0
    y = idx(pick(prefix + "-labels")).astype(np.int64)
    return x, y


def table(path):
    a = np.genfromtxt(path, delimiter=",", names=True)
    return a


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--calibration-holdout", type=float, default=None,
                   help="fraction of the training images held out to calibrate the product on (default: none)")
    p.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    p.add_argument("--work", default="novelty")
    p.add_argument("--skip-train", action="store_true", help="reuse the score tables in --work")
    a = p.parse_args()
    classes = [int(c) for c in a.classes.split(",")]
    if not a.skip_train:
        cmd = ["cargo", "run", "--release", "-q", "-p", "dekm-cli", "--example", "novelty", "--",
               "--data-dir", a.data_dir, "--dataset", a.dataset, "--out", a.work,
               "--classes", a.classes, "--train-limit", str(a.train_limit), "--epochs", str(a.epochs)]
        if a.calibration_holdout is not None:
            cmd += ["--calibration-holdout", str(a.calibration_holdout)]
        subprocess.run(cmd, check=True)
    xtr, ytr = load(a.data_dir, a.dataset, "train")
    xte, yte = load(a.data_dir, a.dataset, "t10k")
    rows = []
    for c in classes:
        stem = os.path.join(a.work, f"{a.dataset}-holdout{c}")
        te, tr = table(stem + "-test.csv"), table(stem + "-train.csv")
        keep = np.flatnonzero(ytr != c)[: a.train_limit]
        assert np.array_equal(ytr[keep], tr["label"].astype(np.int64)), "training subsets differ"
        truth = yte == c
        scores = {s: (tr[s], te[s]) for s in SCORES[:5]}
        forest = IsolationForest(n_estimators=200, random_state=0).fit(xtr[keep])
        scores["iforest_pixels"] = (-forest.score_samples(xtr[keep]), -forest.score_samples(xte))
        nn = NearestNeighbors(n_neighbors=6).fit(xtr[keep])
        d_tr = nn.kneighbors(xtr[keep], 6)[0][:, 5]
        d_te = nn.kneighbors(xte, 5)[0][:, 4]
        scores["knn_pixels"] = (d_tr, d_te)
        for s in SCORES:
            s_tr, s_te = scores[s]
            if s in OWN_FLAGS:
                flags = te[OWN_FLAGS[s]] > 0  # the product's own per-cluster thresholds
            else:
                flags = s_te > np.quantile(s_tr, QUANTILE)
            rows.append((c, s, roc_auc_score(truth, s_te), average_precision_score(truth, s_te),
                         flags[truth].mean(), flags[~truth].mean()))
            print(f"{a.dataset} held out {c} {s:15s} AUROC {rows[-1][2]:.4f} AP {rows[-1][3]:.4f} "
                  f"recall {rows[-1][4]:.3f} false alarms {rows[-1][5]:.4f}", flush=True)
    print(f"\n| {a.dataset} score | mean AUROC | mean AP | mean recall at threshold | mean false alarms |")
    print("|---|---|---|---|---|")
    for s in SCORES:
        r = np.array([x[2:] for x in rows if x[1] == s])
        print(f"| {s} | {r[:, 0].mean():.4f} | {r[:, 1].mean():.4f} | {r[:, 2].mean():.3f} | {r[:, 3].mean():.4f} |")
    print("\nper class AUROC:")
    print("| score | " + " | ".join(str(c) for c in classes) + " |")
    print("|---|" + "---|" * len(classes))
    for s in SCORES:
        print(f"| {s} | " + " | ".join(f"{x[2]:.3f}" for x in rows if x[1] == s) + " |")


if __name__ == "__main__":
    sys.exit(main())
