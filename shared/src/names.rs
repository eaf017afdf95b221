//! Tensor names and shapes of an exported `model.safetensors`.
//!
//! All tensors are little-endian `F32`. Weights follow PyTorch's layout: a convolution's weight
//! is `[out, in, kh, kw]`, a linear layer's `[out, in]`, so `y = W x + b`.

use alloc::{format, string::String, vec, vec::Vec};

use crate::{ContractError, EncoderSpec, OutlierScore};

/// Rotation `V` (`[d, d]`): row `i` is the eigenvector of `Sw` with the `i`-th smallest
/// eigenvalue, so `y = V z` and the last coordinate of `y` is the most discriminative.
pub const V: &str = "dekm.v";
/// Eigenvalues of `Sw` in ascending order (`[d]`), matching the rows of [`V`].
pub const EIGENVALUES: &str = "dekm.eigenvalues";
/// Cluster centres in latent space (`[k, d]`).
pub const CENTROIDS_Z: &str = "dekm.centroids_z";
/// Cluster centres in the rotated space, `V mu` (`[k, d]`).
pub const CENTROIDS_Y: &str = "dekm.centroids_y";
/// Outlier threshold per cluster in the units of [`crate::ModelMeta::outlier_score`] (`[k]`), at
/// the quantile named by [`crate::ModelMeta::threshold_quantile`].
pub const THRESHOLDS: &str = "dekm.thresholds";
/// Quantile levels of the calibration table, ascending in `(0, 1]` (`[q]`).
pub const QUANTILE_LEVELS: &str = "dekm.quantile_levels";
/// Per-cluster quantiles of the outlier score on the training data (`[k, q]`), so a device can
/// pick another outlier threshold without retraining. (The name predates other scores than the
/// distance.)
pub const DISTANCE_QUANTILES: &str = "dekm.distance_quantiles";
/// Per-cluster whitening factors in `y` space (`[k, d, d]`, each lower-triangular): `W` with
/// `W S Wᵀ = I` for the cluster's covariance `S`, so the Mahalanobis score is `|W (y - mu)|`.
/// Present exactly when the outlier score is [`OutlierScore::Mahalanobis`].
pub const WHITENING: &str = "dekm.whitening";
/// Reference latents of the neighbour score in `y` space (`[references, d]`): a seeded
/// subsample of the training latents. Present exactly when the outlier score is
/// [`OutlierScore::Knn`], with as many rows as it names.
pub const REFERENCES: &str = "dekm.references";
/// Per-feature offset subtracted from a raw sample (`[input_len]`).
pub const INPUT_OFFSET: &str = "input.offset";
/// Per-feature factor applied after the offset (`[input_len]`).
pub const INPUT_SCALE: &str = "input.scale";

/// File name of the export inside a model directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// Checksum file beside [`MODEL_FILE`], in `sha256sum` format.
pub const SHA_FILE: &str = "model.safetensors.sha256";

/// Key of the JSON metadata block in the safetensors header.
pub const META_KEY: &str = "dekm.meta";
/// Key of the format version in the safetensors header (duplicated outside the JSON so a reader
/// can reject a newer file before parsing anything else).
pub const FORMAT_KEY: &str = "dekm.format_version";

/// Name of the `i`-th convolution of the encoder, e.g. `encoder.conv0`.
pub fn conv(i: usize) -> String {
    format!("encoder.conv{i}")
}

/// Name of the `i`-th hidden dense layer of the encoder, e.g. `encoder.dense0`.
pub fn dense(i: usize) -> String {
    format!("encoder.dense{i}")
}

/// Name of the linear layer producing the latent vector.
pub const LATENT: &str = "encoder.latent";

/// One tensor the export must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Full tensor name.
    pub name: String,
    /// Expected shape.
    pub shape: Vec<usize>,
}

fn layer(name: String, weight: Vec<usize>, out: usize) -> [TensorSpec; 2] {
    [
        TensorSpec {
            name: format!("{name}.weight"),
            shape: weight,
        },
        TensorSpec {
            name: format!("{name}.bias"),
            shape: vec![out],
        },
    ]
}

/// The encoder's tensors for `spec`, first layer to last (what a runtime needs to encode).
pub fn encoder_tensors(spec: &EncoderSpec) -> Result<Vec<TensorSpec>, ContractError> {
    spec.validate()?;
    let mut out = Vec::new();
    match spec {
        EncoderSpec::Conv { .. } | EncoderSpec::Conv1d { .. } => {
            let temporal = matches!(spec, EncoderSpec::Conv1d { .. });
            for (i, g) in spec.conv_geometry()?.iter().enumerate() {
                let mut w = vec![g.output.channels, g.input.channels];
                if !temporal {
                    w.push(g.kernel.height);
                }
                w.push(g.kernel.width);
                out.extend(layer(conv(i), w, g.output.channels));
            }
            let mut prev = spec.conv_out_len()?;
            for (i, &h) in spec.conv_hidden().iter().enumerate() {
                out.extend(layer(dense(i), vec![h, prev], h));
                prev = h;
            }
        }
        EncoderSpec::Dense { input, hidden, .. } => {
            let mut prev = *input;
            for (i, &h) in hidden.iter().enumerate() {
                out.extend(layer(dense(i), vec![h, prev], h));
                prev = h;
            }
        }
    }
    let d = spec.latent_dim();
    out.extend(layer(LATENT.into(), vec![d, spec.pre_latent_len()?], d));
    Ok(out)
}

/// Every tensor of an export for `spec` with `k` clusters, `q` calibration quantiles and the
/// outlier `score`, in a fixed order: encoder layers first to last, then the clustering head,
/// then preprocessing.
pub fn expected_tensors(
    spec: &EncoderSpec,
    k: usize,
    q: usize,
    score: OutlierScore,
) -> Result<Vec<TensorSpec>, ContractError> {
    let d = spec.latent_dim();
    let mut out = encoder_tensors(spec)?;
    let n = spec.input_len();
    for (name, shape) in [
        (V, vec![d, d]),
        (EIGENVALUES, vec![d]),
        (CENTROIDS_Z, vec![k, d]),
        (CENTROIDS_Y, vec![k, d]),
        (THRESHOLDS, vec![k]),
        (QUANTILE_LEVELS, vec![q]),
        (DISTANCE_QUANTILES, vec![k, q]),
    ] {
        out.push(TensorSpec {
            name: name.into(),
            shape,
        });
    }
    match score {
        OutlierScore::Distance => {}
        OutlierScore::Mahalanobis => out.push(TensorSpec {
            name: WHITENING.into(),
            shape: vec![k, d, d],
        }),
        OutlierScore::Knn(n) => out.push(TensorSpec {
            name: REFERENCES.into(),
            shape: vec![n.references as usize, d],
        }),
    }
    for (name, shape) in [(INPUT_OFFSET, vec![n]), (INPUT_SCALE, vec![n])] {
        out.push(TensorSpec {
            name: name.into(),
            shape,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageShape;

    #[test]
    fn conv1d_weights_are_three_dimensional_and_pooling_sets_the_latent_width() {
        use crate::{SeriesShape, TimePooling};
        let input = SeriesShape {
            channels: 6,
            length: 100,
        };
        let spec = EncoderSpec::paper_conv1d(input, TimePooling::MeanStd, 10);
        let t = encoder_tensors(&spec).unwrap();
        assert_eq!(t[0].name, "encoder.conv0.weight");
        assert_eq!(t[0].shape, [32, 6, 7]);
        assert_eq!(t[4].shape, [128, 64, 3]);
        assert_eq!(t[6].name, "encoder.latent.weight");
        assert_eq!(t[6].shape, [10, 256]);
        let flat = EncoderSpec::paper_conv1d(input, TimePooling::Flatten, 10);
        assert_eq!(encoder_tensors(&flat).unwrap()[6].shape, [10, 1536]);
    }

    #[test]
    fn paper_conv_export_lists_encoder_then_head() {
        let input = ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        };
        let spec = EncoderSpec::paper_conv(input, 10);
        let t = expected_tensors(&spec, 10, 9, OutlierScore::Distance).unwrap();
        assert_eq!(t[0].name, "encoder.conv0.weight");
        assert_eq!(t[0].shape, [32, 1, 5, 5]);
        assert_eq!(t[6].name, "encoder.latent.weight");
        assert_eq!(t[6].shape, [10, 1152]);
        assert_eq!(t.last().unwrap().shape, [784]);
        assert_eq!(t.len(), 8 + 9);
        let m = expected_tensors(&spec, 10, 9, OutlierScore::Mahalanobis).unwrap();
        assert_eq!(m.len(), t.len() + 1);
        let w = m.iter().find(|t| t.name == WHITENING).unwrap();
        assert_eq!(w.shape, [10, 10, 10]);
        let knn = crate::Neighbours {
            neighbours: 5,
            references: 700,
        };
        let n = expected_tensors(&spec, 10, 9, OutlierScore::Knn(knn)).unwrap();
        assert_eq!(n.len(), t.len() + 1);
        let r = n.iter().find(|t| t.name == REFERENCES).unwrap();
        assert_eq!(r.shape, [700, 10]);
        assert!(!n.iter().any(|t| t.name == WHITENING));
    }
}
