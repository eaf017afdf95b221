//! DBSCAN (Ester et al., 1996) with scikit-learn's conventions: a point is a core point when at
//! least `min_samples` points, itself included, lie within `eps`; clusters are the connected
//! core points plus the border points they reach; everything else is noise, which dekm reports
//! as outliers.
//!
//! Neighbourhoods are radius queries on a k-d tree ([`KdTree::within`]), one point's at a time
//! when it is expanded, so memory stays O(n) whatever `eps` is; each compares distances in f64
//! exactly as a brute-force scan would, so the clusters are the scan's (and scikit-learn's).
//! In high dimensions the tree prunes little and a query costs about a scan.

use rayon::prelude::*;

use crate::neighbours::KdTree;
use crate::{ClusterError, Fit, Fitted, Points};

/// DBSCAN's two parameters.
#[derive(Debug, Clone, Copy)]
pub struct DbscanConfig {
    /// Neighbourhood radius (Euclidean), > 0.
    pub eps: f64,
    /// Points (the point itself included) that make a core point, >= 1.
    pub min_samples: usize,
}

/// A DBSCAN result.
#[derive(Debug, Clone, PartialEq)]
pub struct Dbscan {
    /// Cluster of each point; `None` for noise.
    pub labels: Vec<Option<u32>>,
    /// Number of clusters.
    pub clusters: usize,
    /// Which points are core points.
    pub core: Vec<bool>,
}

impl Dbscan {
    /// Number of noise points.
    pub fn noise(&self) -> usize {
        self.labels.iter().filter(|l| l.is_none()).count()
    }
}

impl Fit for DbscanConfig {
    type Model = Dbscan;

    /// Runs DBSCAN.
    fn fit(&self, p: &Points<'_>) -> Result<Dbscan, ClusterError> {
        fit(p, self)
    }
}

impl Fitted for Dbscan {
    fn assignments(&self) -> Vec<Option<u32>> {
        self.labels.clone()
    }
}

fn fit(p: &Points<'_>, cfg: &DbscanConfig) -> Result<Dbscan, ClusterError> {
    if !(cfg.eps > 0.0 && cfg.eps.is_finite()) {
        return Err(ClusterError::Parameter {
            name: "eps",
            value: cfg.eps.to_string(),
            reason: "must be a positive finite distance",
        });
    }
    if cfg.min_samples == 0 {
        return Err(ClusterError::Parameter {
            name: "min_samples",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    let n = p.len();
    let eps2 = cfg.eps * cfg.eps;
    let tree = KdTree::new(p);
    // In index order, as a scan finds them: the order of expansion fixes the labels.
    let neighbours = |i: usize, out: &mut Vec<u32>| {
        out.clear();
        tree.within(p.row(i), eps2, out);
        out.sort_unstable();
    };
    let counts: Vec<usize> = (0..n)
        .into_par_iter()
        .map_init(Vec::new, |out, i| {
            out.clear();
            tree.within(p.row(i), eps2, out);
            out.len()
        })
        .collect();
    let core: Vec<bool> = counts.iter().map(|&c| c >= cfg.min_samples).collect();
    let mut labels: Vec<Option<u32>> = vec![None; n];
    let mut clusters = 0u32;
    let mut stack = Vec::new();
    let mut found = Vec::new();
    for start in 0..n {
        if labels[start].is_some() || !core[start] {
            continue;
        }
        labels[start] = Some(clusters);
        stack.push(start);
        while let Some(i) = stack.pop() {
            neighbours(i, &mut found);
            for &j in &found {
                let j = j as usize;
                if labels[j].is_none() {
                    labels[j] = Some(clusters);
                    if core[j] {
                        stack.push(j);
                    }
                }
            }
        }
        clusters += 1;
    }
    Ok(Dbscan {
        labels,
        clusters: clusters as usize,
        core,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two concentric rings (radius 1 and 5, 200 points each) and two far-away points.
    fn rings() -> Vec<f32> {
        let mut xs = Vec::new();
        for (r, m) in [(1.0f32, 200), (5.0, 200)] {
            for i in 0..m {
                let t = i as f32 / m as f32 * std::f32::consts::TAU;
                xs.extend([r * t.cos(), r * t.sin()]);
            }
        }
        xs.extend([20.0, 20.0, -20.0, 20.0]);
        xs
    }

    #[test]
    fn rings_become_two_clusters_and_stray_points_noise() {
        let xs = rings();
        let p = Points::new(&xs, 2).unwrap();
        let r = fit(
            &p,
            &DbscanConfig {
                eps: 0.5,
                min_samples: 3,
            },
        )
        .unwrap();
        assert_eq!(r.clusters, 2);
        assert_eq!(r.noise(), 2);
        assert!(r.labels[..200].iter().all(|&l| l == Some(0)));
        assert!(r.labels[200..400].iter().all(|&l| l == Some(1)));
        assert_eq!(&r.labels[400..], [None, None]);
        // k-means would cut both rings in halves; DBSCAN follows the density.
    }

    /// DBSCAN with brute-force neighbourhoods, the reference the tree's answer must equal.
    fn scanned(p: &Points<'_>, eps: f64, min: usize) -> Vec<Option<u32>> {
        let n = p.len();
        let within = |i: usize| -> Vec<usize> {
            (0..n)
                .filter(|&j| crate::sq64(p.row(i), p.row(j)) <= eps * eps)
                .collect()
        };
        let core: Vec<bool> = (0..n).map(|i| within(i).len() >= min).collect();
        let (mut labels, mut c) = (vec![None; n], 0);
        for s in 0..n {
            if labels[s].is_some() || !core[s] {
                continue;
            }
            labels[s] = Some(c);
            let mut stack = vec![s];
            while let Some(i) = stack.pop() {
                for j in within(i) {
                    if labels[j].is_none() {
                        labels[j] = Some(c);
                        if core[j] {
                            stack.push(j);
                        }
                    }
                }
            }
            c += 1;
        }
        labels
    }

    #[test]
    fn the_tree_gives_the_brute_force_clusters() {
        use rand::Rng;
        let mut r = crate::rng(9, 0);
        for d in [2, 5] {
            let xs: Vec<f32> = (0..600 * d)
                .map(|i| (i % 3) as f32 * 3.0 + r.random_range(-1.0..1.0f32))
                .collect();
            let p = Points::new(&xs, d).unwrap();
            for (eps, min) in [(0.3, 3), (0.6, 5), (1.5, 10)] {
                let got = fit(
                    &p,
                    &DbscanConfig {
                        eps,
                        min_samples: min,
                    },
                )
                .unwrap();
                assert_eq!(got.labels, scanned(&p, eps, min), "d={d} eps={eps}");
            }
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let xs = rings();
        let p = Points::new(&xs, 2).unwrap();
        for (eps, min) in [(0.0, 3), (-1.0, 3), (f64::NAN, 3), (1.0, 0)] {
            let err = fit(
                &p,
                &DbscanConfig {
                    eps,
                    min_samples: min,
                },
            )
            .unwrap_err();
            assert!(matches!(err, ClusterError::Parameter { .. }), "{err}");
        }
        assert_eq!(Points::new(&[], 2).unwrap_err(), ClusterError::Empty);
    }
}
