#!/usr/bin/env python3
"""Classical baselines on the UEA/UCR sensor sets, for docs/RESULTS.md ("Sensor sets: the
classical baselines", "Spectral features"): scikit-learn k-means (10 starts, seeds 0-2) on the
raw windows standardised per value and per channel, on per-channel statistics (mean, sd, min,
max of every channel, standardised), and on the spectral features dekm's `--series-features
spectrum` computes (each channel's mean and 8 log band powers, bands scaled per channel), for
BasicMotions, GunPoint and JapaneseVowels (whose unequal-length cases only the statistics take
as they are). A yardstick, not part of the product.

    python3 -m venv v && v/bin/pip install scikit-learn scipy
    v/bin/python scripts/bench-sensor-baselines.py [DATA_DIR]   # default ../shared/data
"""
import sys
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score as ari
from sklearn.metrics import normalized_mutual_info_score as nmi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from yardstick import acc  # noqa: E402


def read(path):
    cases, labels = [], []
    for line in open(path):
        line = line.strip()
        if not line or line[0] in "#@":
            continue
        parts = line.split(":")
        labels.append(parts[-1])
        cases.append(np.array([[float(v) for v in c.split(",")] for c in parts[:-1]]))
    return cases, np.array(labels)


def report(name, features, truth, k):
    for seed in range(3):
        p = KMeans(k, n_init=10, random_state=seed).fit_predict(features)
        print(f"{name:46s} seed {seed}: ACC {acc(truth, p):.4f} NMI {nmi(truth, p):.4f} "
              f"ARI {ari(truth, p):.4f}")


def standardise(x):
    return (x - x.mean(0)) / (x.std(0) + 1e-12)


def spectra(x, bands=8):
    """dekm's spectral features of windows `x` [n, C, W] (shared/src/spectrum.rs), standardised
    as dekm does: each channel's mean alone, its log band powers with one scale."""
    n, c, w = x.shape
    x = x / (x.std((0, 2), keepdims=True) + 1e-12)
    mean = x.mean(2, keepdims=True)
    power = np.abs(np.fft.rfft(x - mean, axis=2)) ** 2 / w**2
    f = w // 2
    edges = [1 + b * f // bands for b in range(bands + 1)]
    logp = np.log(1e-6 + np.stack([power[:, :, edges[b]:edges[b + 1]].sum(2)
                                   for b in range(bands)], 2))
    m = standardise(mean[:, :, 0])[:, :, None]
    dev = logp - logp.mean(0)
    dev = dev / (np.sqrt((dev**2).mean((0, 2), keepdims=True)) + 1e-12)
    return np.concatenate([m, dev], 2).reshape(n, -1)


def main():
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data") / "sensors"
    for name, k in [("basicmotions/BasicMotions", 4), ("gunpoint/GunPoint", 2),
                    ("japanesevowels/JapaneseVowels", 9)]:
        a, ya = read(f"{data}/{name}_TRAIN.ts")
        b, yb = read(f"{data}/{name}_TEST.ts")
        cases, truth = a + b, np.concatenate([ya, yb])
        print(f"{name}: {len(cases)} cases, k = {k}")
        if len({c.shape for c in cases}) == 1:
            x = np.stack(cases)
            report("raw, standardised per value", standardise(x.reshape(len(x), -1)), truth, k)
            m, s = x.mean((0, 2), keepdims=True), x.std((0, 2), keepdims=True)
            report("raw, standardised per channel", ((x - m) / s).reshape(len(x), -1), truth, k)
            report("spectra (dekm's spectral features)", spectra(x), truth, k)
        stats = np.array([np.concatenate([c.mean(1), c.std(1), c.min(1), c.max(1)]) for c in cases])
        report("per-channel statistics (mean, sd, min, max)", standardise(stats), truth, k)


if __name__ == "__main__":
    main()
