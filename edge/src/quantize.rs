//! Int8 encoder weights for bundles: each row of a weight tensor (one output channel of a
//! convolution or dense layer) as signed bytes times one f32 scale, `max |w| / 127`.
//!
//! Why per row and symmetric: a row's weights feed one output, so one scale per row keeps a
//! quiet filter from being rounded to zero by a loud one, and with no zero point the widened
//! weight is exactly `q * scale`. Only the `encoder.*.weight` tensors are quantized: they are
//! most of a model's bytes (MNIST: 137,000 values), while the biases, rotation, centroids,
//! whitening and thresholds are small and steer every assignment. The neighbour score's
//! reference latents (`dekm.references`, up to 40,960 values) stay f32 too: quantized per
//! latent, the error scales with a latent's length, not with the far smaller distance between
//! neighbours that the score measures, and on a small image model 95% of the flags changed.
//! The runtime computes on the bytes (`encoder::int8`, activations quantized too); `widen` gives
//! the f32 twin for tools that read f32.

use alloc::{string::String, vec::Vec};
use serde::{Deserialize, Serialize};

/// One quantized weight tensor as a bundle stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Int8Tensor {
    /// Export name, e.g. `encoder.conv0.weight`.
    pub name: String,
    /// Dimensions, outermost (output channels) first.
    pub shape: Vec<usize>,
    /// One scale per row (`shape[0]` values).
    pub scales: Vec<f32>,
    /// The weights, row-major, `w ~ q * scales[row]`.
    pub values: Vec<i8>,
}

impl Int8Tensor {
    /// Quantizes `data` (row-major, `shape[0]` rows) per row.
    pub fn quantize(name: &str, shape: &[usize], data: &[f32]) -> Self {
        let rows = shape.first().copied().unwrap_or(1).max(1);
        let per = data.len() / rows;
        let mut scales = Vec::with_capacity(rows);
        let mut values = Vec::with_capacity(data.len());
        for row in data.chunks(per.max(1)) {
            let max = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            values.extend(
                row.iter()
                    .map(|&w| round(w / scale).clamp(-127.0, 127.0) as i8),
            );
            scales.push(scale);
        }
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            scales,
            values,
        }
    }

    /// The weights widened to f32, or `None` when the scales or values do not fit the shape.
    pub fn widen(&self) -> Option<Vec<f32>> {
        let len: usize = self.shape.iter().product();
        let rows = self.shape.first().copied()?;
        if self.values.len() != len || self.scales.len() != rows || rows == 0 {
            return None;
        }
        let per = len / rows;
        // Sized up front: growing by doubling would leave a small device's heap in pieces.
        let mut out = Vec::with_capacity(len);
        for (row, &s) in self.values.chunks(per.max(1)).zip(&self.scales) {
            out.extend(row.iter().map(|&q| f32::from(q) * s));
        }
        Some(out)
    }
}

/// True for the tensors an int8 model stores as bytes.
pub fn is_quantized(name: &str) -> bool {
    name.starts_with("encoder.") && name.ends_with(".weight")
}

/// Round half away from zero (`f32::round` is not in `core`).
fn round(x: f32) -> f32 {
    let t = x as i32 as f32;
    if (x - t).abs() >= 0.5 {
        t + x.signum()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_get_their_own_scale_and_widen_close() {
        let data = [0.5f32, -1.0, 0.25, 0.001, 0.002, -0.003];
        let q = Int8Tensor::quantize("encoder.dense0.weight", &[2, 3], &data);
        assert_eq!(q.values[..3], [64, -127, 32]);
        assert_eq!(q.values[3..], [42, 85, -127]);
        let w = q.widen().unwrap();
        for ((a, b), s) in w
            .iter()
            .zip(&data)
            .zip([1.0f32 / 127.0, 0.003 / 127.0].repeat(3))
        {
            assert!((a - b).abs() <= 0.5 * s + 1e-9, "{a} vs {b}");
        }
        // Widened weights quantize back to the same bytes and scales.
        let again = Int8Tensor::quantize(&q.name, &q.shape, &w);
        assert_eq!(again.values, q.values);
    }

    #[test]
    fn a_zero_row_and_a_bad_shape() {
        let q = Int8Tensor::quantize("encoder.latent.weight", &[1, 2], &[0.0, 0.0]);
        assert_eq!(
            (q.values.as_slice(), q.scales.as_slice()),
            ([0, 0].as_slice(), [1.0].as_slice())
        );
        let mut bad = q.clone();
        bad.values.pop();
        assert_eq!(bad.widen(), None);
        assert!(is_quantized("encoder.conv1.weight"));
        assert!(!is_quantized("encoder.conv1.bias") && !is_quantized("dekm.v"));
        assert!(!is_quantized("dekm.references"));
    }
}
