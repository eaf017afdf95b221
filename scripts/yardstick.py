"""What the benchmark scripts share: clustering accuracy under the best one-to-one matching of
clusters to classes (the Hungarian method), as dekm's own ACC computes it. Imported by
bench-vectors.py and bench-sensor-baselines.py; a yardstick, not part of the product."""
import numpy as np
from scipy.optimize import linear_sum_assignment


def acc(truth, pred):
    """ACC of predicted clusters `pred` against classes `truth` (any labels, e.g. strings)."""
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    k = max(t.max(), p.max()) + 1
    w = np.zeros((k, k))
    for a, b in zip(p, t):
        w[a, b] += 1
    r, c = linear_sum_assignment(-w)
    return w[r, c].sum() / len(t)
