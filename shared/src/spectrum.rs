//! Log band powers of a window: the features activity-like windows are clustered on.
//!
//! Why: four activities recorded by a watch (standing, walking, running, badminton) differ in
//! how strongly and how fast each axis moves, not in where inside a 10 s window a step falls.
//! An encoder over the raw readings sees the position first (BasicMotions: k-means on the raw
//! windows 0.35 ACC, the dense autoencoder 0.44-0.46, the 1-D convolutions 0.59-0.73), while a
//! window's power spectrum does not move when the motion does (k-means on the log band powers
//! 0.96; docs/RESULTS.md, "Spectral features"). Speech coefficients are the opposite case: their
//! values carry the vowel and the raw windows cluster better, so the trainer chooses between the
//! two by a label-free score, and the choice travels in the model's metadata.
//!
//! What a window becomes, per channel `c` of `length` readings `x_t` (scaled by the channel's
//! `scale`): its mean, then for each of `bands` contiguous groups of the frequencies
//! `1..=length/2` the natural log of `1e-6 + sum |X_f|^2 / length^2`, where `X_f` is the
//! discrete Fourier transform of the window less its mean. `channels x (bands + 1)` values,
//! channel-major; the model's normaliser then standardises them.
//!
//! The transform is computed here, once, by the trainer and the edge runtime alike: a direct
//! DFT from a table of `length` cosines and sines built when the model loads (`libm`, so every
//! platform gets the same bits), `channels x length^2 / 2` multiply-adds a window
//! (30,000 for 6 channels of 100 readings) and no allocation.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::{ContractError, Normalizer, preprocess::check_finite};

/// Added to a band's power before its log, so a silent channel (a stuck sensor) gives a large
/// finite negative value instead of minus infinity. In units of the channel's variance over the
/// training data.
pub const POWER_FLOOR: f32 = 1e-6;

/// How a window of a model trained on spectral features becomes its feature vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectrumSpec {
    /// Channels of a window.
    pub channels: usize,
    /// Readings per channel.
    pub length: usize,
    /// Frequency bands per channel.
    pub bands: usize,
    /// Multiplies each channel's readings before the transform: one over the channel's
    /// standard deviation in the training data, so [`POWER_FLOOR`] means the same for a channel
    /// in g as for one in mg.
    pub scale: Vec<f32>,
}

impl SpectrumSpec {
    /// Bands per channel unless asked otherwise: enough to tell a walk from a run, few enough
    /// that every band holds several frequencies of a one-second window.
    pub const DEFAULT_BANDS: usize = 8;

    /// Fits the channel scales on channel-major `windows` (`channels x length` values each).
    pub fn fit(
        windows: &[f32],
        channels: usize,
        length: usize,
        bands: usize,
    ) -> Result<Self, ContractError> {
        let per = Normalizer::per_channel(windows, channels, length);
        let spec = Self {
            channels,
            length,
            bands,
            scale: per.scale().iter().step_by(length.max(1)).copied().collect(),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Values of one raw window: `channels x length`.
    pub fn input_len(&self) -> usize {
        self.channels * self.length
    }

    /// Features of one window: `channels x (bands + 1)`.
    pub fn output_len(&self) -> usize {
        self.channels * (self.bands + 1)
    }

    /// Frequencies a window of `length` readings resolves above zero.
    pub fn frequencies(&self) -> usize {
        self.length / 2
    }

    /// Checks sizes (every band holds at least one frequency) and the scales.
    pub fn validate(&self) -> Result<(), ContractError> {
        if self.channels == 0 {
            return Err(ContractError::ZeroSize {
                what: "spectrum channels",
            });
        }
        if self.bands == 0 {
            return Err(ContractError::ZeroSize {
                what: "spectrum bands",
            });
        }
        if self.bands > self.frequencies() {
            return Err(ContractError::TooManyBands {
                bands: self.bands,
                length: self.length,
                frequencies: self.frequencies(),
            });
        }
        if self.scale.len() != self.channels {
            return Err(ContractError::LengthMismatch {
                what: "spectrum channel scales",
                expected: self.channels,
                got: self.scale.len(),
            });
        }
        check_finite("spectrum channel scales", &self.scale)?;
        match self.scale.iter().position(|&s| s <= 0.0) {
            Some(c) => Err(ContractError::BadMetadata(alloc::format!(
                "spectrum channel scale {c} is {}, it must be positive",
                self.scale[c]
            ))),
            None => Ok(()),
        }
    }
}

impl Normalizer {
    /// Standardisation of spectral features (`channels x (bands + 1)` values a sample, as
    /// [`Spectrum::apply`] lays them out): each channel's mean on its own, and its log band
    /// powers about their means with one scale for all bands of the channel, the root mean
    /// square of their deviations.
    ///
    /// One scale per channel because a difference of log power means the same in every band:
    /// scaled band by band, the bands that hold only noise (whose log power wanders by about 1.3
    /// whatever its level) weigh as much as the band a motion lives in, and outvote it (two tones at random
    /// phases: k-means' silhouette 0.21 scaled per band, 0.62 per channel).
    pub fn spectral(features: &[f32], channels: usize, bands: usize) -> Self {
        let len = channels * (bands + 1);
        let per = Self::standardize(features, len);
        let n = features.len().checked_div(len).unwrap_or(0);
        let mut scale = per.scale().to_vec();
        for c in 0..channels {
            let lo = c * (bands + 1) + 1;
            let mut sum = 0f64;
            for row in features.chunks_exact(len.max(1)) {
                for (&v, &m) in row[lo..lo + bands]
                    .iter()
                    .zip(&per.offset()[lo..lo + bands])
                {
                    sum += f64::from(v - m) * f64::from(v - m);
                }
            }
            let rms = libm::sqrt(sum / (n * bands).max(1) as f64);
            let s = if rms > 1e-12 { (1.0 / rms) as f32 } else { 1.0 };
            scale[lo..lo + bands].fill(s);
        }
        // Lengths agree and the values are finite: both come from `standardize`.
        Self::new(per.offset().to_vec(), scale).unwrap_or(per)
    }
}

/// A [`SpectrumSpec`] ready to run: its sine and cosine table and band edges.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    spec: SpectrumSpec,
    /// `cos(2 pi j / length)` for `j` in `0..length`.
    cos: Vec<f32>,
    /// `sin(2 pi j / length)`.
    sin: Vec<f32>,
    /// First frequency of each band, and one past the last band's: `bands + 1` values.
    edges: Vec<usize>,
}

impl Spectrum {
    /// Checks `spec` and builds its tables.
    pub fn new(spec: SpectrumSpec) -> Result<Self, ContractError> {
        spec.validate()?;
        let n = spec.length;
        let angle = |j: usize| 2.0 * core::f64::consts::PI * j as f64 / n as f64;
        let cos = (0..n).map(|j| libm::cos(angle(j)) as f32).collect();
        let sin = (0..n).map(|j| libm::sin(angle(j)) as f32).collect();
        let f = spec.frequencies();
        let edges = (0..=spec.bands).map(|b| 1 + b * f / spec.bands).collect();
        Ok(Self {
            spec,
            cos,
            sin,
            edges,
        })
    }

    /// The specification.
    pub fn spec(&self) -> &SpectrumSpec {
        &self.spec
    }

    /// Features of one channel-major raw window into `out`, rejecting wrong lengths and
    /// NaN/Inf before anything is computed.
    pub fn apply(&self, raw: &[f32], out: &mut [f32]) -> Result<(), ContractError> {
        let s = &self.spec;
        for (what, expected, got) in [
            ("window", s.input_len(), raw.len()),
            ("spectrum output buffer", s.output_len(), out.len()),
        ] {
            if got != expected {
                return Err(ContractError::LengthMismatch {
                    what,
                    expected,
                    got,
                });
            }
        }
        check_finite("window", raw)?;
        let n = s.length;
        let norm = 1.0 / (n as f32 * n as f32);
        for ((x, o), &scale) in raw
            .chunks_exact(n)
            .zip(out.chunks_exact_mut(s.bands + 1))
            .zip(&s.scale)
        {
            let mean = x.iter().sum::<f32>() / n as f32;
            o[0] = mean * scale;
            // The channel's scale multiplies every coefficient, so it enters the power once,
            // squared, instead of once per reading and frequency.
            let scaled_norm = norm * scale * scale;
            for (band, lim) in o[1..].iter_mut().zip(self.edges.windows(2)) {
                let mut power = 0f32;
                for f in lim[0]..lim[1] {
                    let (mut re, mut im, mut j) = (0f32, 0f32, 0usize);
                    for &v in x {
                        let v = v - mean;
                        re += v * self.cos[j];
                        im += v * self.sin[j];
                        j += f;
                        if j >= n {
                            j -= n;
                        }
                    }
                    power += (re * re + im * im) * scaled_norm;
                }
                *band = libm::logf(POWER_FLOOR + power);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn spectrum(channels: usize, length: usize, bands: usize) -> Spectrum {
        Spectrum::new(SpectrumSpec {
            channels,
            length,
            bands,
            scale: vec![1.0; channels],
        })
        .unwrap()
    }

    /// A pure tone lands in the band of its frequency with the power Parseval gives it
    /// (amplitude a: a^2 / 4 in each of the two bins +-f, the positive one counted here), and
    /// the mean is reported apart.
    #[test]
    fn a_tone_lands_in_its_band() {
        let (n, f, a) = (64usize, 13usize, 2.0f32);
        let s = spectrum(1, n, 4);
        let x: Vec<f32> = (0..n)
            .map(|t| 0.5 + a * libm::cosf(2.0 * core::f32::consts::PI * (f * t) as f32 / n as f32))
            .collect();
        let mut out = [0f32; 5];
        s.apply(&x, &mut out).unwrap();
        assert!((out[0] - 0.5).abs() < 1e-5, "{out:?}");
        // 32 frequencies in 4 bands: 1-8, 9-16, 17-24, 25-32; 13 is in the second.
        let expected = libm::logf(POWER_FLOOR + a * a / 4.0);
        assert!((out[2] - expected).abs() < 1e-4, "{out:?} vs {expected}");
        for b in [1, 3, 4] {
            assert!(out[b] < -10.0, "band {b} should be silent: {out:?}");
        }
    }

    /// Shifting a periodic window in time leaves every feature as it was: what the features
    /// are for.
    #[test]
    fn features_do_not_move_with_the_motion() {
        let n = 50;
        let wave = |t: usize| {
            let t = t as f32 * 2.0 * core::f32::consts::PI / n as f32;
            libm::sinf(3.0 * t) + 0.3 * libm::cosf(7.0 * t + 1.0)
        };
        let s = spectrum(1, n, 5);
        let (mut a, mut b) = ([0f32; 6], [0f32; 6]);
        s.apply(&(0..n).map(wave).collect::<Vec<_>>(), &mut a)
            .unwrap();
        s.apply(&(0..n).map(|t| wave(t + 17)).collect::<Vec<_>>(), &mut b)
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }

    /// Channels are independent and in order; the scale makes units irrelevant.
    #[test]
    fn channels_are_scaled_and_kept_apart() {
        let n = 16;
        let x: Vec<f32> = (0..n).map(|t| (t % 4) as f32).collect();
        let mut two = x.clone();
        two.extend(x.iter().map(|v| v * 1000.0));
        let s = Spectrum::new(SpectrumSpec {
            channels: 2,
            length: n,
            bands: 2,
            scale: vec![1.0, 1e-3],
        })
        .unwrap();
        let mut out = [0f32; 6];
        s.apply(&two, &mut out).unwrap();
        for i in 0..3 {
            assert!((out[i] - out[3 + i]).abs() < 1e-3, "{out:?}");
        }
    }

    #[test]
    fn fit_takes_each_channels_spread() {
        // Two windows, channel 0 alternating 0/2 (sd 1), channel 1 constant (scale 1).
        let w = [0.0, 2.0, 0.0, 2.0, 5.0, 5.0, 5.0, 5.0];
        let spec = SpectrumSpec::fit(&[w, w].concat(), 2, 4, 2).unwrap();
        assert_eq!(spec.scale, [1.0, 1.0]);
        let w = [0.0, 4.0, 0.0, 4.0, 5.0, 5.0, 5.0, 5.0];
        assert_eq!(SpectrumSpec::fit(&w, 2, 4, 1).unwrap().scale, [0.5, 1.0]);
    }

    /// Bands share their channel's scale; the mean keeps its own.
    #[test]
    fn spectral_standardisation_pools_the_bands_of_a_channel() {
        // Two samples of one channel, 2 bands: mean 0/2, bands (0, 10) and (2, 14).
        let n = Normalizer::spectral(&[0.0, 0.0, 10.0, 2.0, 2.0, 14.0], 1, 2);
        assert_eq!(n.offset(), [1.0, 1.0, 12.0]);
        // Deviations of the bands: +-1 and +-2, root mean square sqrt(2.5).
        let s = 1.0 / 2.5f32.sqrt();
        assert_eq!(n.scale()[0], 1.0);
        assert!(
            (n.scale()[1] - s).abs() < 1e-6 && (n.scale()[2] - s).abs() < 1e-6,
            "{n:?}"
        );
    }

    #[test]
    fn bad_specs_and_windows_are_named() {
        let err = Spectrum::new(SpectrumSpec {
            channels: 1,
            length: 10,
            bands: 6,
            scale: vec![1.0],
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "6 spectrum bands need at least 6 frequencies, a window of 10 readings has 5"
        );
        for (bands, scale) in [(0, vec![1.0]), (2, vec![1.0, 1.0]), (2, vec![0.0])] {
            let spec = SpectrumSpec {
                channels: 1,
                length: 10,
                bands,
                scale,
            };
            assert!(Spectrum::new(spec).is_err());
        }
        let s = spectrum(2, 8, 2);
        let mut out = [0f32; 6];
        assert_eq!(
            s.apply(&[0.0; 15], &mut out),
            Err(ContractError::LengthMismatch {
                what: "window",
                expected: 16,
                got: 15
            })
        );
        let mut x = [0f32; 16];
        x[9] = f32::NAN;
        assert_eq!(
            s.apply(&x, &mut out),
            Err(ContractError::NotFinite {
                what: "window",
                index: 9
            })
        );
    }
}
