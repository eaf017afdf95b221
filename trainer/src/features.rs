//! What a series is clustered on: its raw readings, or the log band powers of each channel
//! ([`dekm_shared::spectrum`]), and the label-free rule `auto` chooses between them by.
//!
//! Activity windows cluster on their spectra (BasicMotions, k-means: 0.35 ACC on the raw
//! windows, 0.96 on the spectra), speech coefficients on their values (JapaneseVowels: 0.93
//! raw, 0.72 spectral), and the demo's plant, whose regimes differ in level as much as in
//! motion, on its raw windows (DEKM 0.97 raw, 0.75-0.94 spectral). The rule: k-means with `k`
//! clusters on each representation as the model would see it (each standardised), and the
//! spectra win when their partition's mean silhouette beats the raw one's by
//! [`SPECTRUM_MARGIN`]. On the three UEA/UCR sets of `../shared/data/sensors` and the demo it
//! picks the better one each time (docs/RESULTS.md, "Spectral features"). Images and vectors
//! are never transformed.

use std::borrow::Cow;

use dekm_cluster::internal::{PairOptions, silhouette};
use dekm_cluster::kmeans::KMeansConfig;
use dekm_cluster::{Fit, Points};
use dekm_shared::{Normalizer, Spectrum, SpectrumSpec};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, SampleShape};
use crate::model::SeriesEncoder;
use crate::train::{TrainConfig, TrainError};

/// What series are clustered on (`--series-features`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SeriesFeatures {
    /// `spectrum` when it gives k-means a clearly higher silhouette on the training windows
    /// than `raw` does ([`SPECTRUM_MARGIN`]), else `raw`; `raw` under the 1-D convolutional
    /// encoder, which is for raw readings.
    #[default]
    Auto,
    /// The readings themselves.
    Raw,
    /// Each channel's mean and log band powers ([`SpectrumSpec`]), clustered as a vector.
    Spectrum,
}

crate::choice::choice!(SeriesFeatures { Auto => "auto", Raw => "raw", Spectrum => "spectrum" });

/// How much higher the spectra's silhouette must be for `auto` to take them. The raw
/// readings keep everything a window holds, the spectra drop phase and the relations between
/// channels, so the spectra must be clearly better: measured margins were +0.17 on
/// BasicMotions and +0.08 on GunPoint (spectra better by 0.50 and 0.11 ACC), +0.03 on the
/// demo's plant (raw better by 0.03-0.2) and -0.10 on JapaneseVowels (raw better by 0.25).
pub const SPECTRUM_MARGIN: f64 = 0.05;

/// Samples the silhouettes of the `auto` rule are computed on, at most: the score of a
/// 2,000-point sample is within a few thousandths of the whole one's and costs
/// `2000^2 x d` multiply-adds.
const RULE_SAMPLE: usize = 2000;

/// What a run's series are clustered on, and why.
#[derive(Debug, Clone)]
pub struct FeatureChoice {
    /// The transform, when the spectra were chosen.
    pub spectrum: Option<Spectrum>,
    /// The silhouettes `auto` compared (absent when the choice was given, or the data are not
    /// series).
    pub scores: Option<FeatureScores>,
}

/// The silhouettes of k-means on both representations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeatureScores {
    /// On the raw windows, normalised as the raw path normalises them.
    pub raw: f64,
    /// On the standardised spectral features.
    pub spectrum: f64,
}

impl FeatureChoice {
    /// The setting as used: `raw` or `spectrum`.
    pub fn used(&self) -> SeriesFeatures {
        if self.spectrum.is_some() {
            SeriesFeatures::Spectrum
        } else {
            SeriesFeatures::Raw
        }
    }

    /// The spec the model's metadata records.
    pub fn spec(&self) -> Option<SpectrumSpec> {
        self.spectrum.as_ref().map(|s| s.spec().clone())
    }

    /// `ds` as the model sees it: its spectral features, or itself.
    pub fn apply<'a>(&self, ds: &'a Dataset) -> Result<Cow<'a, Dataset>, TrainError> {
        match &self.spectrum {
            Some(s) => Ok(Cow::Owned(spectral(ds, s)?)),
            None => Ok(Cow::Borrowed(ds)),
        }
    }

    /// One line for `train`'s output: what the series were clustered on and why.
    pub fn explain(&self, asked: SeriesFeatures) -> String {
        let what = match &self.spectrum {
            Some(s) => format!("each channel's mean and {} log band powers", s.spec().bands),
            None => "the raw readings".into(),
        };
        let why = match (asked, self.scores) {
            (SeriesFeatures::Auto, Some(s)) => format!(
                "; auto: k-means' silhouette {:.3} on the spectra against {:.3} on the raw windows \
                 (the spectra need a lead of {SPECTRUM_MARGIN})",
                s.spectrum, s.raw
            ),
            (SeriesFeatures::Auto, None) => "; auto keeps raw readings for this encoder".into(),
            _ => "; as asked".into(),
        };
        format!("series clustered on {what}{why}")
    }
}

/// Decides what `ds`'s samples are clustered on under `cfg` (nothing to decide for images
/// and vectors), fitting the spectral transform on `ds` when it is used.
pub fn choose(ds: &Dataset, cfg: &TrainConfig) -> Result<FeatureChoice, TrainError> {
    let raw = FeatureChoice {
        spectrum: None,
        scores: None,
    };
    let SampleShape::Series(shape) = ds.shape else {
        return match cfg.series_features {
            SeriesFeatures::Spectrum => Err(TrainError::Config(
                "--series-features spectrum needs series data (windows of a recording or .ts cases)"
                    .into(),
            )),
            _ => Ok(raw),
        };
    };
    let fit = |bands| {
        SpectrumSpec::fit(&ds.xs, shape.channels, shape.length, bands)
            .and_then(Spectrum::new)
            .map_err(|e| TrainError::Config(e.to_string()))
    };
    match cfg.series_features {
        SeriesFeatures::Raw => Ok(raw),
        SeriesFeatures::Spectrum => Ok(FeatureChoice {
            spectrum: Some(fit(cfg.spectrum_bands)?),
            scores: None,
        }),
        SeriesFeatures::Auto => {
            let bands = cfg.spectrum_bands.min(shape.length / 2);
            if cfg.series_encoder == SeriesEncoder::Conv1d || bands == 0 || ds.len() <= cfg.k {
                return Ok(raw);
            }
            let spectrum = fit(bands)?;
            let scores = FeatureScores {
                raw: kmeans_silhouette(ds, &ds.fit_normalizer(), cfg)?,
                spectrum: {
                    let features = spectral(ds, &spectrum)?;
                    kmeans_silhouette(&features, &features.fit_normalizer(), cfg)?
                },
            };
            tracing::info!(?scores, "series features: k-means silhouettes");
            Ok(FeatureChoice {
                spectrum: (scores.spectrum > scores.raw + SPECTRUM_MARGIN).then_some(spectrum),
                scores: Some(scores),
            })
        }
    }
}

/// Mean silhouette of k-means (`cfg.k` clusters, `cfg.restarts` restarts) on `ds` through
/// `normalizer`, on a seeded sample of at most [`RULE_SAMPLE`] points.
fn kmeans_silhouette(
    ds: &Dataset,
    normalizer: &Normalizer,
    cfg: &TrainConfig,
) -> Result<f64, TrainError> {
    let xs = ds
        .normalized(normalizer)
        .map_err(|(i, e)| TrainError::Config(format!("input sample {i}: {e}")))?;
    let points = Points::new(&xs, ds.shape.len())?;
    let km = KMeansConfig {
        restarts: cfg.restarts.max(1),
        seed: cfg.seed,
        ..KMeansConfig::new(cfg.k)
    }
    .fit(&points)?;
    let opts = PairOptions {
        max_exact: RULE_SAMPLE,
        seed: cfg.seed,
    };
    // One cluster (k = 1, or k-means left the rest empty) has no silhouette: nothing to prefer.
    Ok(silhouette(&points, &km.labels, &opts).map_or(f64::NEG_INFINITY, |s| s.value))
}

/// The spectral features of every window of `ds`: `channels x (bands + 1)` values per sample, with `ds`'s labels and anomaly flags. The
/// stream spec stays with the model's metadata, not with the features.
pub fn spectral(ds: &Dataset, spectrum: &Spectrum) -> Result<Dataset, TrainError> {
    let (len, out) = (spectrum.spec().input_len(), spectrum.spec().output_len());
    if ds.shape.len() != len {
        return Err(TrainError::Config(format!(
            "data set {} has {} values per sample but the spectral features take windows of {len}",
            ds.name,
            ds.shape.len()
        )));
    }
    let mut xs = vec![0f32; ds.len() * out];
    for (i, (raw, o)) in ds
        .xs
        .chunks_exact(len)
        .zip(xs.chunks_exact_mut(out))
        .enumerate()
    {
        spectrum
            .apply(raw, o)
            .map_err(|e| TrainError::Config(format!("sample {i}: {e}")))?;
    }
    Ok(Dataset {
        name: ds.name.clone(),
        shape: SampleShape::Spectra {
            channels: spectrum.spec().channels,
            bands: spectrum.spec().bands,
        },
        xs,
        labels: ds.labels.clone(),
        anomalies: ds.anomalies.clone(),
        label_names: ds.label_names.clone(),
        text: None,
        stream: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dekm_shared::SeriesShape;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    use std::f32::consts::TAU;

    /// Windows of two activities that differ in how fast the channel moves, each starting at
    /// a random phase: raw readings do not separate them, spectra do, and `auto` takes the
    /// spectra. Windows that differ in level and not in motion go the other way.
    #[test]
    fn auto_takes_the_representation_that_separates() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 32;
        let mut moving = Vec::new();
        let mut level = Vec::new();
        let mut labels = Vec::new();
        for i in 0..120 {
            let class = i % 2;
            let (f, phase) = ([2.0f32, 9.0][class], rng.random::<f32>() * TAU);
            for t in 0..n {
                let mut noise = || 0.3 * rng.sample::<f32, _>(StandardNormal);
                let at = |f: f32| (f * t as f32 * TAU / n as f32 + phase).sin();
                moving.push(at(f) + noise());
                level.push([0.0f32, 3.0][class] + 0.5 * at(4.0) + noise());
            }
            labels.push(class as u32);
        }
        let series = |xs: Vec<f32>| Dataset {
            name: "t".into(),
            shape: SampleShape::Series(SeriesShape {
                channels: 1,
                length: n,
            }),
            xs,
            labels: Some(labels.clone()),
            anomalies: None,
            label_names: Vec::new(),
            text: None,
            stream: None,
        };
        let cfg = TrainConfig {
            k: 2,
            ..TrainConfig::default()
        };
        let moving = choose(&series(moving), &cfg).unwrap();
        assert_eq!(
            moving.used(),
            SeriesFeatures::Spectrum,
            "{:?}",
            moving.scores
        );
        assert_eq!(moving.spec().unwrap().bands, 8);
        let level = choose(&series(level), &cfg).unwrap();
        assert_eq!(level.used(), SeriesFeatures::Raw, "{:?}", level.scores);
        let s = level.scores.unwrap();
        assert!(s.raw > s.spectrum, "{s:?}");
        assert!(
            level
                .explain(SeriesFeatures::Auto)
                .contains("auto: k-means' silhouette")
        );
    }

    #[test]
    fn spectra_are_refused_for_vectors_and_checked_against_the_window() {
        let ds = Dataset {
            name: "v".into(),
            shape: SampleShape::Vector(4),
            xs: vec![0.0; 40],
            labels: None,
            anomalies: None,
            label_names: Vec::new(),
            text: None,
            stream: None,
        };
        let cfg = TrainConfig {
            series_features: SeriesFeatures::Spectrum,
            ..TrainConfig::default()
        };
        let err = choose(&ds, &cfg).unwrap_err();
        assert!(err.to_string().contains("needs series data"), "{err}");
        let auto = TrainConfig::default();
        assert_eq!(choose(&ds, &auto).unwrap().used(), SeriesFeatures::Raw);
        let series = Dataset {
            shape: SampleShape::Series(SeriesShape {
                channels: 1,
                length: 4,
            }),
            ..ds
        };
        let err = choose(&series, &cfg).unwrap_err();
        assert!(err.to_string().contains("8 spectrum bands"), "{err}");
    }
}
