//! External clustering metrics: ACC under the optimal cluster-to-class matching (Hungarian
//! algorithm), NMI and ARI, with the conventions of scikit-learn.

use std::collections::BTreeMap;

use dekm_shared::TrainingMetrics;

/// Counts `table[p][t]` of samples with prediction `p` and truth `t`, both dense ids.
/// Distinct values of `labels`, sorted, and each label's index among them: tables are sized by
/// the labels present, not by their values (a label of 4e9 must not allocate 4e9 rows).
fn dense(labels: &[u32]) -> (Vec<u32>, Vec<usize>) {
    let mut values = labels.to_vec();
    values.sort_unstable();
    values.dedup();
    let idx = labels
        .iter()
        .map(|l| values.binary_search(l).unwrap_or(0))
        .collect();
    (values, idx)
}

/// Contingency table over the distinct labels (rows: `pred`'s in increasing order, columns:
/// `truth`'s), with those label values.
fn table(pred: &[u32], truth: &[u32]) -> (Vec<Vec<u64>>, Vec<u32>, Vec<u32>) {
    let (pv, pi) = dense(pred);
    let (tv, ti) = dense(truth);
    let mut t = vec![vec![0u64; tv.len()]; pv.len()];
    for (&p, &c) in pi.iter().zip(&ti) {
        t[p][c] += 1;
    }
    (t, pv, tv)
}

fn contingency(pred: &[u32], truth: &[u32]) -> Vec<Vec<u64>> {
    table(pred, truth).0
}

/// Minimum-cost perfect matching on a square cost matrix (Hungarian algorithm with potentials,
/// O(n³)). Returns `col[row]`.
pub fn hungarian(cost: &[Vec<i64>]) -> Vec<usize> {
    let n = cost.len();
    // 1-based arrays; index 0 is the virtual start column.
    let (mut u, mut v) = (vec![0i64; n + 1], vec![0i64; n + 1]);
    let (mut row_of, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut minv = vec![i64::MAX; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let (i0, mut delta, mut j1) = (row_of[j0], i64::MAX, 0);
            for j in 1..=n {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    let mut col = vec![0; n];
    for j in 1..=n {
        if row_of[j] != 0 {
            col[row_of[j] - 1] = j - 1;
        }
    }
    col
}

/// The one-to-one map from predicted ids to truth ids that agrees on the most samples; predicted
/// ids without a partner (more clusters than classes) map to `None`.
pub fn best_map(pred: &[u32], truth: &[u32]) -> BTreeMap<u32, Option<u32>> {
    let (t, pv, tv) = table(pred, truth);
    let rows = t.len();
    let cols = t.first().map_or(0, Vec::len);
    let n = rows.max(cols);
    let max = t.iter().flatten().copied().max().unwrap_or(0) as i64;
    let cost: Vec<Vec<i64>> = (0..n)
        .map(|r| {
            (0..n)
                .map(|c| max - t.get(r).and_then(|row| row.get(c)).map_or(0, |&x| x as i64))
                .collect()
        })
        .collect();
    let col = hungarian(&cost);
    (0..rows)
        .map(|r| (pv[r], (col[r] < cols).then(|| tv[col[r]])))
        .collect()
}

/// Fraction of samples on which `pred`, relabelled by [`best_map`], equals `truth`.
pub fn accuracy(pred: &[u32], truth: &[u32]) -> f64 {
    if pred.is_empty() {
        return 0.0;
    }
    let map = best_map(pred, truth);
    let hits = pred
        .iter()
        .zip(truth)
        .filter(|&(p, &t)| map.get(p) == Some(&Some(t)))
        .count();
    hits as f64 / pred.len() as f64
}

fn entropy(counts: impl Iterator<Item = u64>, n: f64) -> f64 {
    counts
        .filter(|&c| c > 0)
        .map(|c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// Normalised mutual information with arithmetic-mean normalisation (scikit-learn's default).
pub fn nmi(pred: &[u32], truth: &[u32]) -> f64 {
    let t = contingency(pred, truth);
    let n = pred.len() as f64;
    let rows: Vec<u64> = t.iter().map(|r| r.iter().sum()).collect();
    let cols: Vec<u64> = (0..t.first().map_or(0, Vec::len))
        .map(|c| t.iter().map(|r| r[c]).sum())
        .collect();
    let (hp, ht) = (
        entropy(rows.iter().copied(), n),
        entropy(cols.iter().copied(), n),
    );
    if hp == 0.0 && ht == 0.0 {
        return 1.0;
    }
    let mut mi = 0.0;
    for (r, row) in t.iter().enumerate() {
        for (c, &x) in row.iter().enumerate() {
            if x > 0 {
                let x = x as f64;
                mi += x / n * (x * n / (rows[r] as f64 * cols[c] as f64)).ln();
            }
        }
    }
    let denom = (hp + ht) / 2.0;
    if denom <= 0.0 {
        0.0
    } else {
        (mi / denom).clamp(0.0, 1.0)
    }
}

/// Adjusted Rand index.
pub fn ari(pred: &[u32], truth: &[u32]) -> f64 {
    let comb2 = |x: u64| (x as f64) * (x as f64 - 1.0) / 2.0;
    let t = contingency(pred, truth);
    let n = pred.len() as u64;
    let sum_ij: f64 = t.iter().flatten().map(|&x| comb2(x)).sum();
    let sum_a: f64 = t.iter().map(|r| comb2(r.iter().sum())).sum();
    let sum_b: f64 = (0..t.first().map_or(0, Vec::len))
        .map(|c| comb2(t.iter().map(|r| r[c]).sum()))
        .sum();
    let expected = sum_a * sum_b / comb2(n);
    let max = (sum_a + sum_b) / 2.0;
    if max == expected {
        // Both partitions trivial (all in one cluster or all singletons): identical by convention.
        return 1.0;
    }
    (sum_ij - expected) / (max - expected)
}

/// ACC, NMI and ARI together.
pub fn evaluate(pred: &[u32], truth: &[u32]) -> TrainingMetrics {
    TrainingMetrics {
        acc: accuracy(pred, truth),
        nmi: nmi(pred, truth),
        ari: ari(pred, truth),
    }
}

/// Fraction of samples whose cluster changed between two clusterings, after relabelling `new`
/// onto `old` optimally (k-means may permute ids between runs).
pub fn changed_fraction(old: &[u32], new: &[u32]) -> f64 {
    1.0 - accuracy(new, old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acc_is_one_under_any_permutation() {
        let truth = [0, 0, 1, 1, 2, 2, 3, 3];
        for perm in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            let pred: Vec<u32> = truth.iter().map(|&t| perm[t as usize]).collect();
            assert_eq!(accuracy(&pred, &truth), 1.0, "{perm:?}");
            let map = best_map(&pred, &truth);
            for (t, &p) in perm.iter().enumerate() {
                assert_eq!(map[&p], Some(t as u32));
            }
        }
    }

    #[test]
    fn acc_with_errors_and_unequal_counts() {
        // Cluster 0 -> class 1 (3 hits), cluster 1 -> class 0 (2 hits), cluster 2 unmatched.
        let pred = [0, 0, 0, 1, 1, 2, 0];
        let truth = [1, 1, 1, 0, 0, 0, 0];
        assert!((accuracy(&pred, &truth) - 5.0 / 7.0).abs() < 1e-12);
        assert_eq!(best_map(&pred, &truth)[&2], None);
    }

    #[test]
    fn huge_label_values_cost_nothing() {
        // Tables are sized by the labels present, not their values.
        let pred = [4_000_000_000u32, 4_000_000_000, 7, 7];
        let truth = [u32::MAX, u32::MAX, 0, 0];
        assert_eq!(evaluate(&pred, &truth).acc, 1.0);
        assert_eq!(ari(&pred, &truth), 1.0);
    }

    #[test]
    fn hungarian_finds_the_minimum() {
        let cost = vec![vec![4, 1, 3], vec![2, 0, 5], vec![3, 2, 2]];
        let col = hungarian(&cost);
        let total: i64 = col.iter().enumerate().map(|(r, &c)| cost[r][c]).sum();
        assert_eq!(total, 5);
    }

    // Reference values from scikit-learn 1.9.1 (normalized_mutual_info_score,
    // adjusted_rand_score) on these exact vectors.
    const PRED: [u32; 12] = [0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 1, 2];
    const TRUTH: [u32; 12] = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 1, 0];
    const NMI_REF: f64 = 0.32726567031574794;
    const ARI_REF: f64 = 0.13651877133105803;

    #[test]
    fn nmi_and_ari_match_scikit_learn() {
        assert!(
            (nmi(&PRED, &TRUTH) - NMI_REF).abs() < 1e-9,
            "{}",
            nmi(&PRED, &TRUTH)
        );
        assert!(
            (ari(&PRED, &TRUTH) - ARI_REF).abs() < 1e-9,
            "{}",
            ari(&PRED, &TRUTH)
        );
    }

    #[test]
    fn perfect_and_trivial_partitions() {
        assert_eq!(nmi(&TRUTH, &TRUTH), 1.0);
        assert!((ari(&TRUTH, &TRUTH) - 1.0).abs() < 1e-12);
        assert_eq!(nmi(&[0; 5], &[0; 5]), 1.0);
        assert_eq!(changed_fraction(&[0, 0, 1, 1], &[1, 1, 0, 0]), 0.0);
        assert_eq!(changed_fraction(&[0, 0, 1, 1], &[1, 1, 0, 1]), 0.25);
    }
}
