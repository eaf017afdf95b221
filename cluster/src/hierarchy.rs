//! Agglomerative clustering with the seven classic linkages, through `kodama` (Müllner's
//! algorithms, as in SciPy and fastcluster), plus cutting the dendrogram into `k` clusters.
//!
//! The condensed distance matrix takes n(n-1)/2 `f32`s, so the number of points is capped at
//! [`MAX_POINTS`] (about 200 MB); cluster a sample, or the centroids of a finer k-means, beyond.

use crate::{ClusterError, Points, sq64};

/// Largest number of points (the distance matrix is quadratic in it).
pub const MAX_POINTS: usize = 10_000;

/// How the distance between two clusters is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// Closest pair of points (chains along thin bridges).
    Single,
    /// Farthest pair of points.
    Complete,
    /// Mean over all pairs (UPGMA).
    Average,
    /// WPGMA: mean of the two merged clusters' distances.
    Weighted,
    /// Increase of within-cluster variance (compact, k-means-like clusters).
    Ward,
    /// Distance between centroids.
    Centroid,
    /// Distance between the midpoints of merged clusters (WPGMC).
    Median,
}

impl std::str::FromStr for Linkage {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, ClusterError> {
        Ok(match s {
            "single" => Self::Single,
            "complete" => Self::Complete,
            "average" => Self::Average,
            "weighted" => Self::Weighted,
            "ward" => Self::Ward,
            "centroid" => Self::Centroid,
            "median" => Self::Median,
            _ => {
                return Err(ClusterError::Parameter {
                    name: "linkage",
                    value: s.into(),
                    reason: "one of single, complete, average, weighted, ward, centroid, median",
                });
            }
        })
    }
}

impl Linkage {
    fn method(self) -> kodama::Method {
        match self {
            Self::Single => kodama::Method::Single,
            Self::Complete => kodama::Method::Complete,
            Self::Average => kodama::Method::Average,
            Self::Weighted => kodama::Method::Weighted,
            Self::Ward => kodama::Method::Ward,
            Self::Centroid => kodama::Method::Centroid,
            Self::Median => kodama::Method::Median,
        }
    }
}

/// One merge: clusters `a` and `b` (ids below `n` are points, `n + i` is the cluster made by
/// merge `i`, as in SciPy) joined at `height`, giving `size` points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Merge {
    /// First cluster.
    pub a: usize,
    /// Second cluster.
    pub b: usize,
    /// Linkage distance.
    pub height: f32,
    /// Points in the merged cluster.
    pub size: usize,
}

/// The full merge tree of `n` points (`n - 1` merges, heights non-decreasing except for
/// centroid and median linkage, which can invert).
#[derive(Debug, Clone, PartialEq)]
pub struct Dendrogram {
    /// Number of points.
    pub n: usize,
    /// Merges in order.
    pub merges: Vec<Merge>,
}

/// Agglomerative clustering cut into `k` clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgglomerativeConfig {
    /// Clusters.
    pub k: usize,
    /// How the distance between two clusters is measured.
    pub linkage: Linkage,
}

/// A dendrogram and its cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Agglomerative {
    /// The whole merge tree (for a picture, or another cut).
    pub dendrogram: Dendrogram,
    /// Cluster of each point in the cut.
    pub labels: Vec<u32>,
}

impl crate::Fit for AgglomerativeConfig {
    type Model = Agglomerative;

    /// Builds the dendrogram and cuts it into `k` clusters.
    fn fit(&self, p: &Points<'_>) -> Result<Agglomerative, ClusterError> {
        if self.k == 0 || self.k > p.len() {
            return Err(ClusterError::BadK {
                k: self.k,
                n: p.len(),
            });
        }
        let dendrogram = linkage(p, self.linkage)?;
        let labels = dendrogram.cut(self.k)?;
        Ok(Agglomerative { dendrogram, labels })
    }
}

impl crate::Fitted for Agglomerative {
    fn assignments(&self) -> Vec<Option<u32>> {
        self.labels.iter().copied().map(Some).collect()
    }
}

/// Builds the dendrogram of `p` under `linkage`.
pub fn linkage(p: &Points<'_>, linkage: Linkage) -> Result<Dendrogram, ClusterError> {
    let n = p.len();
    if n > MAX_POINTS {
        return Err(ClusterError::TooMany {
            what: "agglomerative clustering",
            n,
            max: MAX_POINTS,
        });
    }
    let mut condensed = Vec::with_capacity(n * (n.saturating_sub(1)) / 2);
    for i in 0..n {
        for j in i + 1..n {
            condensed.push(sq64(p.row(i), p.row(j)).sqrt() as f32);
        }
    }
    let tree = kodama::linkage(&mut condensed, n, linkage.method());
    Ok(Dendrogram {
        n,
        merges: tree
            .steps()
            .iter()
            .map(|s| Merge {
                a: s.cluster1,
                b: s.cluster2,
                height: s.dissimilarity,
                size: s.size,
            })
            .collect(),
    })
}

impl Dendrogram {
    /// Labels `0..k` from the first `n - k` merges (clusters numbered by their smallest point).
    pub fn cut(&self, k: usize) -> Result<Vec<u32>, ClusterError> {
        if k == 0 || k > self.n {
            return Err(ClusterError::BadK { k, n: self.n });
        }
        // Union-find over points and merge nodes.
        let mut parent: Vec<usize> = (0..self.n + self.merges.len()).collect();
        fn root(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for (i, m) in self.merges.iter().take(self.n - k).enumerate() {
            let node = self.n + i;
            let (ra, rb) = (root(&mut parent, m.a), root(&mut parent, m.b));
            parent[ra] = node;
            parent[rb] = node;
        }
        let mut ids = std::collections::HashMap::new();
        Ok((0..self.n)
            .map(|i| {
                let r = root(&mut parent, i);
                let next = ids.len() as u32;
                *ids.entry(r).or_insert(next)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tight blob of 30 points at the origin, a chain of 10 points bridging to a second blob
    /// of 30 at x = 10: single linkage follows the bridge, Ward splits by compactness.
    fn bridged() -> Vec<f32> {
        let mut xs = Vec::new();
        let mut s = 3u32;
        let mut r = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for _ in 0..30 {
            xs.extend([r() * 0.6, r() * 0.6]);
        }
        for i in 1..=10 {
            xs.extend([i as f32 * 10.0 / 11.0, 0.0]);
        }
        for _ in 0..30 {
            xs.extend([10.0 + r() * 0.6, r() * 0.6]);
        }
        // A far outlier.
        xs.extend([5.0, 30.0]);
        xs
    }

    #[test]
    fn single_linkage_chains_ward_does_not() {
        let xs = bridged();
        let p = Points::new(&xs, 2).unwrap();
        let single = linkage(&p, Linkage::Single).unwrap().cut(2).unwrap();
        // The bridge joins both blobs; the outlier is the other cluster.
        assert!(single[..70].iter().all(|&l| l == single[0]));
        assert_ne!(single[70], single[0]);
        let ward = linkage(&p, Linkage::Ward).unwrap();
        assert_eq!(ward.merges.len(), 70);
        let w = ward.cut(3).unwrap();
        assert_ne!(w[0], w[45], "Ward separates the two blobs");
        assert!(w[..30].iter().all(|&l| l == w[0]));
        assert!(w[40..70].iter().all(|&l| l == w[45]));
        for l in [
            "single", "complete", "average", "weighted", "ward", "centroid", "median",
        ] {
            let tree = linkage(&p, l.parse().unwrap()).unwrap();
            let labels = tree.cut(4).unwrap();
            let distinct: std::collections::BTreeSet<_> = labels.iter().collect();
            assert_eq!(distinct.len(), 4, "{l}");
            assert_eq!(tree.merges.last().unwrap().size, 71, "{l}");
        }
    }

    #[test]
    fn bad_k_and_unknown_linkage() {
        let xs = bridged();
        let p = Points::new(&xs, 2).unwrap();
        let tree = linkage(&p, Linkage::Average).unwrap();
        assert!(matches!(tree.cut(0), Err(ClusterError::BadK { .. })));
        assert!(matches!(tree.cut(72), Err(ClusterError::BadK { .. })));
        assert_eq!(tree.cut(71).unwrap().len(), 71);
        assert!("wards".parse::<Linkage>().is_err());
    }
}
