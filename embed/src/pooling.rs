//! How token states become one sentence vector: sentence-transformers' `Pooling` module.

use std::path::Path;

use candle_core::{D, DType, Tensor};
use serde::Deserialize;

use crate::EmbedError;

/// The pooling mode of `1_Pooling/config.json`. sentence-transformers concatenates several
/// modes when several are on; no published BERT sentence model does, and this crate takes
/// exactly one rather than guess an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the token states the attention mask keeps (all-MiniLM-L6-v2, most models).
    Mean,
    /// The `[CLS]` token's state.
    Cls,
    /// Element-wise maximum over the kept tokens.
    Max,
    /// Sum of the kept states divided by the square root of their count.
    MeanSqrtLen,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl Pooling {
    /// Reads the mode from a pooling config file.
    pub(crate) fn from_config(json: &str, path: &Path) -> Result<Self, EmbedError> {
        let bad = |reason: String| EmbedError::NotAModel {
            path: path.to_path_buf(),
            reason,
        };
        let c: PoolingConfig = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if c.pooling_mode_weightedmean_tokens || c.pooling_mode_lasttoken {
            return Err(bad(
                "weighted-mean and last-token pooling are not supported (mean, cls, max, \
                 mean_sqrt_len are)"
                    .into(),
            ));
        }
        let on = [
            (c.pooling_mode_mean_tokens, Self::Mean),
            (c.pooling_mode_cls_token, Self::Cls),
            (c.pooling_mode_max_tokens, Self::Max),
            (c.pooling_mode_mean_sqrt_len_tokens, Self::MeanSqrtLen),
        ];
        let mut modes = on.iter().filter(|(set, _)| *set).map(|(_, m)| *m);
        match (modes.next(), modes.next()) {
            (Some(m), None) => Ok(m),
            (None, _) => Err(bad("no pooling mode is switched on".into())),
            (Some(_), Some(_)) => Err(bad(
                "several pooling modes are on; sentence-transformers would concatenate them, \
                 which this loader does not"
                    .into(),
            )),
        }
    }

    /// Pools one text's token states (`tokens × hidden`, every token real) into `out`.
    pub(crate) fn pool_rows(self, states: &[f32], out: &mut [f32]) {
        let h = out.len();
        let n = states.len() / h;
        match self {
            Self::Cls => out.copy_from_slice(&states[..h]),
            Self::Max => {
                out.fill(f32::NEG_INFINITY);
                for row in states.chunks_exact(h) {
                    for (o, v) in out.iter_mut().zip(row) {
                        *o = o.max(*v);
                    }
                }
            }
            Self::Mean | Self::MeanSqrtLen => {
                out.fill(0.0);
                for row in states.chunks_exact(h) {
                    for (o, v) in out.iter_mut().zip(row) {
                        *o += v;
                    }
                }
                let div = match self {
                    Self::Mean => n as f32,
                    _ => (n as f32).sqrt(),
                };
                for o in out.iter_mut() {
                    *o /= div;
                }
            }
        }
    }

    /// Pools `states` `[batch, tokens, hidden]` under `mask` `[batch, tokens]` (1 for a real
    /// token, 0 for padding) into `[batch, hidden]`.
    pub(crate) fn apply(self, states: &Tensor, mask: &Tensor) -> Result<Tensor, EmbedError> {
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let masked = states.broadcast_mul(&mask)?;
        // At least one token per row: [CLS] and [SEP] are always there, but a clamp keeps a
        // hand-made all-zero mask from dividing by zero, as sentence-transformers' does.
        let count = || -> Result<Tensor, EmbedError> { Ok(mask.sum(1)?.clamp(1e-9, f64::MAX)?) };
        Ok(match self {
            Self::Mean => masked.sum(1)?.broadcast_div(&count()?)?,
            Self::MeanSqrtLen => masked.sum(1)?.broadcast_div(&count()?.sqrt()?)?,
            Self::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
            Self::Max => {
                // Padding set to -1e9 so it never wins, as sentence-transformers does.
                let pad = ((mask.ones_like()? - &mask)? * -1e9)?;
                states.broadcast_add(&pad)?.max(D::Minus2)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn config_modes_and_refusals() {
        let p = Path::new("1_Pooling/config.json");
        let mode = |json: &str| Pooling::from_config(json, p);
        assert_eq!(
            mode(r#"{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}"#).unwrap(),
            Pooling::Mean
        );
        assert_eq!(
            mode(r#"{"pooling_mode_cls_token": true}"#).unwrap(),
            Pooling::Cls
        );
        for (json, says) in [
            ("{}", "no pooling mode"),
            (
                r#"{"pooling_mode_cls_token": true, "pooling_mode_max_tokens": true}"#,
                "several",
            ),
            (r#"{"pooling_mode_lasttoken": true}"#, "not supported"),
            ("[1]", "1_Pooling"),
        ] {
            let err = mode(json).unwrap_err().to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
    }

    #[test]
    fn padding_never_counts() {
        let dev = Device::Cpu;
        // Two rows: the second has one real token and two padded ones holding large values.
        let states = Tensor::new(
            &[
                [[1f32, 2.], [3., 4.], [5., 6.]],
                [[7., -8.], [100., 100.], [100., 100.]],
            ],
            &dev,
        )
        .unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1], [1, 0, 0]], &dev).unwrap();
        let rows =
            |p: Pooling| -> Vec<Vec<f32>> { p.apply(&states, &mask).unwrap().to_vec2().unwrap() };
        assert_eq!(rows(Pooling::Mean), [[3., 4.], [7., -8.]]);
        assert_eq!(rows(Pooling::Max), [[5., 6.], [7., -8.]]);
        assert_eq!(rows(Pooling::Cls), [[1., 2.], [7., -8.]]);
        let s = rows(Pooling::MeanSqrtLen);
        assert!((s[0][0] - 9. / 3f32.sqrt()).abs() < 1e-5, "{s:?}");
        assert_eq!(s[1], [7., -8.]);
        // Unpadded rows pool to the same vectors.
        for p in [
            Pooling::Mean,
            Pooling::Max,
            Pooling::Cls,
            Pooling::MeanSqrtLen,
        ] {
            let want = rows(p);
            let mut out = [0f32; 2];
            p.pool_rows(&[1., 2., 3., 4., 5., 6.], &mut out);
            assert_eq!(out.to_vec(), want[0], "{p:?}");
            p.pool_rows(&[7., -8.], &mut out);
            assert_eq!(out.to_vec(), want[1], "{p:?}");
        }
    }
}
