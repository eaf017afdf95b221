//! How a model trained on a sensor stream cuts readings into windows.
//!
//! A stream is a sequence of readings, each one value per channel. The trainer cuts it into
//! windows of `window` readings every `hop` readings; a window is one sample, laid out
//! channel-major (channel 0's `window` readings, then channel 1's, ...), which is also the
//! layout of a `.ts` case and of the built-in sensor windows. The preprocessing standardises
//! each channel with one offset and scale for all of its readings. A device reading the same
//! stream must cut it the same way and feed the same channels in the same order, so all of
//! this is part of the model's metadata.

use alloc::{string::String, vec::Vec};
use serde::{Deserialize, Serialize};

use crate::{ContractError, Normalizer};

/// Window, hop and channels of a model trained on a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Channel names in the order of a reading's values (the recording's column names).
    pub channels: Vec<String>,
    /// Readings per window.
    pub window: usize,
    /// Readings between the starts of consecutive windows.
    pub hop: usize,
}

impl StreamSpec {
    /// Checks the spec and that it cuts windows of `input_len` values.
    pub fn validate(&self, input_len: usize) -> Result<(), ContractError> {
        if self.channels.is_empty() {
            return Err(ContractError::ZeroSize {
                what: "stream channels",
            });
        }
        if self.window == 0 {
            return Err(ContractError::ZeroSize {
                what: "stream window",
            });
        }
        if self.hop == 0 {
            return Err(ContractError::ZeroSize { what: "stream hop" });
        }
        if self.window_len() != input_len {
            return Err(ContractError::LengthMismatch {
                what: "stream window (channels x readings)",
                expected: input_len,
                got: self.window_len(),
            });
        }
        Ok(())
    }

    /// Values per reading.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Values per window: channels x readings.
    pub fn window_len(&self) -> usize {
        self.channels.len() * self.window
    }

    /// Copies `window` readings, given reading-major (`[window, channels]`, the order they
    /// arrive in), into `out` channel-major (`[channels, window]`, the order a sample has).
    pub fn to_channel_major(&self, readings: &[f32], out: &mut [f32]) {
        let c = self.channel_count();
        for (t, reading) in readings.chunks_exact(c).take(self.window).enumerate() {
            for (ch, &v) in reading.iter().enumerate() {
                out[ch * self.window + t] = v;
            }
        }
    }
}

impl Normalizer {
    /// Per-channel standardisation of channel-major windows (`channels x window` values each):
    /// each channel's readings share one offset (its mean over all windows) and scale (one over
    /// its standard deviation) at every time step. A constant channel keeps scale 1.
    pub fn per_channel(windows: &[f32], channels: usize, window: usize) -> Self {
        let len = channels * window;
        let mut readings = Vec::with_capacity(windows.len());
        for w in windows.chunks_exact(len.max(1)) {
            for t in 0..window {
                readings.extend((0..channels).map(|c| w[c * window + t]));
            }
        }
        let per = Self::standardize(&readings, channels);
        let expand = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .flat_map(|&x| core::iter::repeat_n(x, window))
                .collect()
        };
        let (offset, scale) = (expand(per.offset()), expand(per.scale()));
        // Lengths agree and the values are finite: both come from `standardize`.
        Self::new(offset, scale).unwrap_or(per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn spec() -> StreamSpec {
        StreamSpec {
            channels: vec!["x".into(), "y".into()],
            window: 3,
            hop: 2,
        }
    }

    #[test]
    fn validate_names_what_is_wrong() {
        assert_eq!(spec().validate(6), Ok(()));
        assert_eq!(
            spec().validate(5),
            Err(ContractError::LengthMismatch {
                what: "stream window (channels x readings)",
                expected: 5,
                got: 6
            })
        );
        let mut s = spec();
        s.hop = 0;
        assert_eq!(
            s.validate(6),
            Err(ContractError::ZeroSize { what: "stream hop" })
        );
    }

    #[test]
    fn readings_become_channel_major() {
        let mut out = [0.0; 6];
        spec().to_channel_major(&[1.0, 10.0, 2.0, 20.0, 3.0, 30.0], &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
    }

    #[test]
    fn per_channel_standardisation_repeats_over_the_window() {
        // Two windows of 3 readings. Channel x: 1, 3, 1 and 3, 1, 3 (mean 2, sd 1); channel y
        // constant 5.
        let n = Normalizer::per_channel(
            &[1.0, 3.0, 1.0, 5.0, 5.0, 5.0, 3.0, 1.0, 3.0, 5.0, 5.0, 5.0],
            2,
            3,
        );
        assert_eq!(n.offset(), [2.0, 2.0, 2.0, 5.0, 5.0, 5.0]);
        assert_eq!(n.scale(), [1.0; 6]);
    }
}
