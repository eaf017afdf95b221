//! Many samples at once: each sample's convolutions as for one, then the dense layers over a
//! chunk of samples.
//!
//! Why: one sample at a time, a dense layer's weights are read once per sample. A dense stack
//! (vectors, series: 784-500-500-2000-10 is 6.6 MB) or ClusterGAN's 6,272 → 1,024 layer (25.7
//! MB) does not fit a core's L2, so each sample streams megabytes from L3 or memory for a few
//! million multiply-adds, and the encoder runs at a fraction of the FMA rate. Over a chunk of
//! [`BATCH`] samples, a hidden layer's register tiles (1x1 convolution tiles whose pixels are
//! samples, `Conv::dense`) and the latent layer's (`dense::MatMat`) load each weight once for
//! several samples, and the chunk's activations stay in cache. The convolutions gain nothing
//! (their weights are reused across pixels already) and run per sample. Every latent has the
//! bits [`Encoder::encode`] gives it, so a file assigned in batches and a stream assigned
//! sample by sample agree exactly. An int8 encoder runs sample by sample.

use super::dense::{Dense, row_stride};
use super::{Aligned, Body, EncoderError, Run, Workspace};
use crate::Encoder;

/// Samples whose dense layers run as one product: each weight row is read once for all of
/// them, and a chunk's activations (16 × 6,272 floats for ClusterGAN's widest layer, 400 KB)
/// stay in L2.
pub const BATCH: usize = 16;

/// Buffers for [`Encoder::encode_batch`]: a [`Workspace`] for each sample's convolutions and
/// two chunk buffers of [`BATCH`] rows for the dense layers, used in turn. Allocated once.
#[derive(Debug, Clone)]
pub struct BatchWorkspace {
    one: Workspace,
    /// `2 × BATCH` rows of `width` values, each starting on a cache line.
    rows: Aligned<f32>,
    width: usize,
}

impl Encoder {
    /// Values per row of a chunk buffer: the widest row a dense layer reads or writes (0 for
    /// an int8 encoder, which runs sample by sample).
    fn dense_width(&self) -> usize {
        let Run::F32 { body, latent } = &self.run else {
            return 0;
        };
        body.dense()
            .iter()
            .map(|c| c.out_stride)
            .fold(row_stride(first_input(body, latent)), usize::max)
    }

    /// Buffers for [`Self::encode_batch`], allocated once.
    pub fn batch_workspace(&self) -> BatchWorkspace {
        let width = self.dense_width();
        BatchWorkspace {
            one: self.workspace(),
            rows: Aligned::new(2 * BATCH * width),
            width,
        }
    }

    /// Writes the latent vectors of the normalised samples `xs` (one after another, each
    /// [`Self::input_len`] values) into `zs` (each [`Self::latent_dim`] values), exactly as
    /// [`Self::encode`] would one by one, the dense layers over [`BATCH`] samples at a time.
    pub fn encode_batch(
        &self,
        xs: &[f32],
        ws: &mut BatchWorkspace,
        zs: &mut [f32],
    ) -> Result<(), EncoderError> {
        let (len, d) = (self.input_len(), self.latent_dim());
        let n = xs.len() / len;
        if n * len != xs.len() || zs.len() != n * d {
            let (what, expected, got) = if n * len != xs.len() {
                (
                    "input batch (whole samples)",
                    xs.len().next_multiple_of(len),
                    xs.len(),
                )
            } else {
                ("latent batch", n * d, zs.len())
            };
            return Err(EncoderError::Length {
                what: what.into(),
                expected,
                got,
            });
        }
        let Run::F32 { body, latent } = &self.run else {
            for (x, z) in xs.chunks_exact(len).zip(zs.chunks_exact_mut(d)) {
                self.encode(x, &mut ws.one, z)?;
            }
            return Ok(());
        };
        if ws.width != self.dense_width() || ws.rows.len() != 2 * BATCH * ws.width {
            *ws = self.batch_workspace();
        }
        self.fit(&mut ws.one);
        // What the first dense layer (or the latent one) reads of each sample's features, and
        // how far apart the samples' rows are: for the first layer, then each one's output.
        let first = first_input(body, latent);
        let strides = (row_stride(first), body.dense().last().map(|c| c.out_stride));
        let half = BATCH * ws.width;
        for (xc, zc) in xs.chunks(BATCH * len).zip(zs.chunks_mut(BATCH * d)) {
            let m = xc.len() / len;
            let (mut cur, mut next) = ws.rows.split_at_mut(half);
            for (x, row) in xc.chunks_exact(len).zip(cur.chunks_exact_mut(strides.0)) {
                if let Body::Dense(_) = body {
                    // A dense stack's features are the sample itself.
                    row[..len].copy_from_slice(x);
                    continue;
                }
                let (f, ..) = ws.one.parts();
                let (features, _) = self.features(body, x, f);
                row[..first].copy_from_slice(&features[..first]);
            }
            for layer in body.dense() {
                layer.forward_pixels(cur, next, m);
                core::mem::swap(&mut cur, &mut next);
            }
            latent.forward_rows((cur, strides.1.unwrap_or(strides.0)), m, (zc, d));
            for z in zc.chunks_exact_mut(d) {
                dekm_shared::softmax_tail(z, self.spec.softmax_tail());
            }
        }
        Ok(())
    }
}

/// Values of each sample's features the first dense layer (or the latent one) reads.
fn first_input(body: &Body, latent: &Dense) -> usize {
    body.dense()
        .first()
        .map_or(latent.input, |c| c.g.input.channels)
}

#[cfg(test)]
mod tests {
    use alloc::{vec, vec::Vec};

    use dekm_shared::EncoderSpec;

    use super::super::tests::{int8_encoder, specs, weights};
    use super::*;

    /// `n` distinct samples of `len` values, one after another.
    fn batch(len: usize, n: usize) -> Vec<f32> {
        (0..n * len)
            .map(|i| ((i * 7 + i / len * 13) % 23) as f32 / 23.0 - 0.3)
            .collect()
    }

    fn one_at_a_time(enc: &Encoder, xs: &[f32]) -> Vec<f32> {
        let mut ws = enc.workspace();
        let mut zs = vec![0.0; xs.len() / enc.input_len() * enc.latent_dim()];
        for (x, z) in xs
            .chunks_exact(enc.input_len())
            .zip(zs.chunks_exact_mut(enc.latent_dim()))
        {
            enc.encode(x, &mut ws, z).unwrap();
        }
        zs
    }

    fn check(enc: &Encoder, what: &str) {
        let mut ws = enc.batch_workspace();
        // One sample, a partial register tile, a chunk and a half (so a full chunk, then a
        // partial one).
        for n in [1, 5, BATCH + BATCH / 2 + 1] {
            let xs = batch(enc.input_len(), n);
            let mut zs = vec![f32::NAN; n * enc.latent_dim()];
            enc.encode_batch(&xs, &mut ws, &mut zs).unwrap();
            let want = one_at_a_time(enc, &xs);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&zs), bits(&want), "{what}, {n} samples");
        }
    }

    #[test]
    fn a_batch_has_the_bits_of_one_sample_at_a_time() {
        let mut all = specs();
        // Layers wider than one register tile's rows and a chunk's samples, and one wide
        // enough for one sample's groups of panels (`conv::one_sample`: 96 outputs with AVX2,
        // 256 with AVX-512) and a remainder.
        all.push(EncoderSpec::Dense {
            input: 37,
            hidden: vec![67, 300],
            latent: 5,
            softmax_tail: 2,
        });
        for spec in &all {
            let w = weights(spec);
            let enc = Encoder::new(spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
            check(&enc, &alloc::format!("f32 {spec:?}"));
            check(&int8_encoder(spec).0, &alloc::format!("int8 {spec:?}"));
        }
    }

    #[test]
    fn partial_samples_and_short_latent_buffers_are_named() {
        let spec = EncoderSpec::paper_dense(6, 3);
        let w = weights(&spec);
        let enc = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
        let mut ws = enc.batch_workspace();
        let err = enc.encode_batch(&[0.0; 13], &mut ws, &mut [0.0; 6]);
        assert_eq!(
            err.unwrap_err().to_string(),
            "input batch (whole samples): expected 18 values, got 13"
        );
        let err = enc.encode_batch(&[0.0; 12], &mut ws, &mut [0.0; 3]);
        assert_eq!(
            err.unwrap_err().to_string(),
            "latent batch: expected 6 values, got 3"
        );
        // A workspace made for another encoder is replaced, not misread.
        let other = EncoderSpec::paper_dense(40, 3);
        let w2 = weights(&other);
        let wide = Encoder::new(&other, |n| w2.get(n).map(Vec::as_slice)).unwrap();
        let mut zs = vec![0.0; 6];
        let xs = batch(40, 2);
        wide.encode_batch(&xs, &mut ws, &mut zs).unwrap();
        assert_eq!(zs, one_at_a_time(&wide, &xs));
    }
}
