//! Clustering on row-major `f32` points, and the metrics that judge a clustering.
//!
//! Algorithms: [`kmeans`] (k-means++ restarts; what DEKM calls every iteration), [`gmm`]
//! (Gaussian mixtures by EM, full or diagonal covariance), [`umap`] (a neighbourhood-keeping
//! layout to cluster in, as N2D does), [`dbscan`] (density clusters with
//! noise as outliers) and [`hierarchy`] (agglomerative, seven linkages, with the dendrogram);
//! [`pca`] projects on the leading principal axes; [`neighbours`] finds each point's nearest
//! others exactly (a k-d tree, or blocked distance products), for UMAP and DBSCAN.
//! Metrics: [`metrics`] (external, against labels: ACC, NMI, ARI), [`internal`] (without
//! labels: silhouette, Calinski-Harabasz, Davies-Bouldin, Dunn) and [`detection`] (an anomaly
//! score against known anomalies: AUROC, average precision, recall at a threshold).
//!
//! One call shape for every algorithm, in linfa's spirit: a settings struct (`KMeansConfig`,
//! `GmmConfig`, ...) that implements [`Fit`], checked when it is fitted, gives a fitted model
//! that implements [`Fitted`] (each point's cluster) and, where placing a new point has a
//! meaning, [`Predict`] (k-means, GMM, SOM). A driver that compares methods needs no more.
//!
//! Every entry point takes a [`Points`], which can only be built from a finite, non-empty,
//! rectangular buffer, so the algorithms never see ragged or NaN data.

pub mod dbscan;
pub mod detection;
pub mod gmm;
pub mod hierarchy;
pub mod internal;
pub mod kmeans;
pub mod metrics;
pub mod neighbours;
pub mod pca;
pub mod select;
pub mod som;
#[cfg(test)]
mod testdata;
pub mod tsne;
pub mod umap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Why a clustering or a metric cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClusterError {
    /// `k` is zero or larger than the number of points.
    #[error("k = {k} is invalid for {n} samples (need 1 <= k <= samples)")]
    BadK {
        /// Requested clusters.
        k: usize,
        /// Number of points.
        n: usize,
    },
    /// Data length is not a multiple of the dimension, or a buffer has the wrong size.
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// NaN or infinity in the points.
    #[error("point {index} has a NaN or infinite coordinate")]
    NotFinite {
        /// Index of the first bad point.
        index: usize,
    },
    /// No points.
    #[error("no points")]
    Empty,
    /// A parameter is out of range.
    #[error("{name} = {value}: {reason}")]
    Parameter {
        /// Parameter name.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// The worker thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Thread(String),
    /// The method needs memory quadratic in the number of points and `n` is beyond its limit.
    #[error("{what} needs O(n^2) memory; {n} points exceed the limit of {max} (cluster a sample)")]
    TooMany {
        /// The method.
        what: &'static str,
        /// Points given.
        n: usize,
        /// Limit.
        max: usize,
    },
    /// The metric is undefined for this number of distinct clusters.
    #[error("{what} needs 2 <= clusters <= samples - 1; got {clusters} clusters for {n} samples")]
    Clusters {
        /// The metric.
        what: &'static str,
        /// Distinct labels.
        clusters: usize,
        /// Samples.
        n: usize,
    },
}

/// A clustering algorithm's settings.
pub trait Fit {
    /// What fitting gives.
    type Model: Fitted;
    /// Checks the settings against `p` and clusters it.
    fn fit(&self, p: &Points<'_>) -> Result<Self::Model, ClusterError>;
}

/// A clustering of the points it was fitted on.
pub trait Fitted {
    /// Each point's cluster; `None` marks noise (only density methods have any).
    fn assignments(&self) -> Vec<Option<u32>>;
}

/// A fitted clustering that can place points it was not fitted on.
pub trait Predict {
    /// The cluster of each of `p`'s points (of the dimension the model was fitted on).
    fn predict(&self, p: &Points<'_>) -> Result<Vec<u32>, ClusterError>;
}

/// A checked view of `n` points of dimension `d`, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Points<'a> {
    xs: &'a [f32],
    d: usize,
}

impl<'a> Points<'a> {
    /// Checks that `xs` holds at least one point of dimension `d > 0`, all finite.
    pub fn new(xs: &'a [f32], d: usize) -> Result<Self, ClusterError> {
        if d == 0 || !xs.len().is_multiple_of(d) {
            return Err(ClusterError::Shape {
                what: "points",
                expected: d.max(1) * (xs.len() / d.max(1)),
                got: xs.len(),
            });
        }
        if xs.is_empty() {
            return Err(ClusterError::Empty);
        }
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            return Err(ClusterError::NotFinite { index: i / d });
        }
        Ok(Self { xs, d })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.xs.len() / self.d
    }

    /// Always false: a `Points` holds at least one point.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Point `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.xs[i * self.d..(i + 1) * self.d]
    }

    /// All coordinates, row-major.
    pub fn as_slice(&self) -> &'a [f32] {
        self.xs
    }

    /// Iterates over the points.
    pub fn rows(&self) -> std::slice::ChunksExact<'a, f32> {
        self.xs.chunks_exact(self.d)
    }
}

/// Squared Euclidean distance, accumulated in f64 so that metrics match references to 1e-6.
pub(crate) fn sq64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let t = f64::from(*x) - f64::from(*y);
            t * t
        })
        .sum()
}

/// Checks that there is one label per point.
pub(crate) fn check_labels(p: &Points<'_>, labels: &[u32]) -> Result<(), ClusterError> {
    if labels.len() != p.len() {
        return Err(ClusterError::Shape {
            what: "labels",
            expected: p.len(),
            got: labels.len(),
        });
    }
    Ok(())
}

/// A deterministic random stream: one `seed` per run, one `stream` per purpose, so adding a use
/// of randomness in one place never shifts the numbers drawn in another.
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}
