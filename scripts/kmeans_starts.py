#!/usr/bin/env python3
"""Which k-means restart should DEKM start from? A side study, not part of the product.

Embeds MNIST or Fashion-MNIST (all 70,000 images, scaled by 1/255 as dekm does) with the encoder
of a dekm checkpoint or export (`encoder.*` tensors of `weights.safetensors` or
`model.safetensors`, image models with the paper's three convolutions), runs scikit-learn k-means
from `--runs` single k-means++ seedings, and prints for each run its inertia, ACC against the
labels, and its agreement with the other runs (mean adjusted Rand index). Then, for R restarts
drawn from those runs (500 draws each), the expected ACC of keeping the lowest inertia (what
dekm and the DEKM reference do) against keeping the consensus run (the highest mean ARI to the
other R - 1).

    python3 scripts/kmeans_starts.py --weights OUT/checkpoint/weights.safetensors \
        --data-dir ../shared/data/fashion-mnist [--runs 30]

Needs numpy, scipy, scikit-learn, safetensors and torch (`pip install ...`); none of them is a
dependency of dekm.
"""

import argparse
import gzip
from pathlib import Path

import numpy as np


def idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def load(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    def one(stem: str) -> np.ndarray:
        for name in (f"{stem}.gz", stem):
            if (data_dir / name).exists():
                return idx(data_dir / name)
        raise SystemExit(f"{data_dir}: no {stem}[.gz]")

    x = np.concatenate([one("train-images-idx3-ubyte"), one("t10k-images-idx3-ubyte")])
    y = np.concatenate([one("train-labels-idx1-ubyte"), one("t10k-labels-idx1-ubyte")])
    return x.astype(np.float32) / 255.0, y


def embed(weights: str, x: np.ndarray) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    from safetensors.numpy import load_file

    w = {k: torch.from_numpy(v) for k, v in load_file(weights).items()}
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 2000):
            h = torch.from_numpy(x[i:i + 2000]).unsqueeze(1)
            # 28 -> 14 -> 7 ("same", stride 2), 7 -> 3 ("valid"), as dekm's encoder spec.
            for layer, pad in ((0, 2), (1, 2), (2, 0)):
                h = F.relu(F.conv2d(h, w[f"encoder.conv{layer}.weight"],
                                    w[f"encoder.conv{layer}.bias"], stride=2, padding=pad))
            out.append((h.flatten(1) @ w["encoder.latent.weight"].T
                        + w["encoder.latent.bias"]).numpy())
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--runs", type=int, default=30)
    a = p.parse_args()
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    x, y = load(a.data_dir)
    z = embed(a.weights, x)
    k = int(y.max()) + 1

    def acc(labels: np.ndarray) -> float:
        m = np.zeros((k, k))
        np.add.at(m, (labels, y), 1)
        r, c = linear_sum_assignment(-m)
        return m[r, c].sum() / len(y)

    n = a.runs
    fits = [KMeans(k, n_init=1, random_state=s).fit(z) for s in range(n)]
    inertia = np.array([f.inertia_ for f in fits])
    accs = np.array([acc(f.labels_) for f in fits])
    agree = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            agree[i, j] = agree[j, i] = adjusted_rand_score(fits[i].labels_, fits[j].labels_)
    mean_agree = (agree.sum(1) - 1) / (n - 1)
    for i in np.argsort(inertia):
        print(f"run {i:3d}  inertia {inertia[i]:.1f}  ACC {accs[i]:.4f}  mean ARI {mean_agree[i]:.4f}")
    rng = np.random.default_rng(1)
    for r in sorted({5, 10, 20, n}):
        if r > n:
            continue
        low, cons = [], []
        for _ in range(500):
            s = rng.choice(n, r, replace=False)
            low.append(accs[s[np.argmin(inertia[s])]])
            cons.append(accs[s[np.argmax(agree[np.ix_(s, s)].sum(1))]])
        print(f"R={r:3d}: lowest inertia ACC {np.mean(low):.4f} ± {np.std(low):.4f}, "
              f"consensus ACC {np.mean(cons):.4f} ± {np.std(cons):.4f} "
              f"(all {n} runs: mean {accs.mean():.4f}, best {accs.max():.4f})")


if __name__ == "__main__":
    main()
