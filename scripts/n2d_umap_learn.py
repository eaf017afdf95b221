#!/usr/bin/env python3
"""N2D with umap-learn on a dekm embedding: the reference for `dekm cluster --method n2d`.
A side study, not part of the product.

Embeds MNIST or Fashion-MNIST (all 70,000 images) with the encoder of a dekm checkpoint or
export (as scripts/kmeans_starts.py does), then prints, per seed, the ACC / NMI / ARI of
scikit-learn k-means (10 restarts) and of N2D: umap-learn's layout (k = 10 components,
20 neighbours, min_dist 0) clustered by a full-covariance GaussianMixture, the settings of
McConville et al. (2020) that dekm's own UMAP (cluster/src/umap.rs) follows.

    python3 scripts/n2d_umap_learn.py --weights OUT/checkpoint/weights.safetensors \
        --data-dir ../shared/data/fashion-mnist [--seeds 0,1,2] [--init spectral]

Needs numpy, scipy, scikit-learn, umap-learn, safetensors and torch (`pip install ...`);
none of them is a dependency of dekm.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from kmeans_starts import embed, load


def acc(y: np.ndarray, p: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    m = np.zeros((p.max() + 1, y.max() + 1))
    np.add.at(m, (p, y), 1)
    r, c = linear_sum_assignment(-m)
    return m[r, c].sum() / len(y)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--init", default="spectral", help="umap-learn init: spectral, random, pca")
    a = ap.parse_args()

    import umap
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score as ari
    from sklearn.metrics import normalized_mutual_info_score as nmi
    from sklearn.mixture import GaussianMixture

    x, y = load(a.data_dir)
    z = embed(a.weights, x)
    km = KMeans(10, n_init=10, random_state=0).fit_predict(z)
    print(f"k-means: ACC {acc(y, km):.4f} NMI {nmi(y, km):.4f} ARI {ari(y, km):.4f}")
    for seed in (int(s) for s in a.seeds.split(",")):
        t = time.time()
        u = umap.UMAP(n_components=10, n_neighbors=20, min_dist=0.0, init=a.init,
                      random_state=seed).fit_transform(z)
        g = GaussianMixture(10, covariance_type="full", random_state=0).fit(u).predict(u)
        print(f"N2D seed {seed} ({a.init}): ACC {acc(y, g):.4f} NMI {nmi(y, g):.4f} "
              f"ARI {ari(y, g):.4f} ({time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
