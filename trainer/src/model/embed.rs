//! Latent vectors of a whole data set: on the edge crate's kernels where they apply, else the
//! candle graph in batches; and the feature map the `manifold` start lays out.

use candle_core::{CpuStorage, DType, Module, Result, Storage, Tensor, bail};
use rayon::prelude::*;

use super::{ConvLayer, Encoder};
use dekm_shared::names;

impl Encoder {
    /// This encoder on the edge crate's inference kernels, or `None` where they do not apply:
    /// dense encoders (a batched GEMM suits them) and candle's own convolutions (kept as they
    /// are for comparisons).
    pub(super) fn on_edge_kernels(&self) -> Result<Option<dekm_edge::Encoder>> {
        let Self::Conv {
            spec,
            convs,
            hidden,
            latent,
            ..
        } = self
        else {
            return Ok(None);
        };
        let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let mut named = Vec::new();
        for (i, c) in convs.iter().enumerate() {
            let ConvLayer::Fast(c, _) = c else {
                return Ok(None);
            };
            named.push((format!("{}.weight", names::conv(i)), values(c.weight())?));
            named.push((format!("{}.bias", names::conv(i)), values(c.bias())?));
        }
        let dense = hidden.iter().enumerate().map(|(i, l)| (names::dense(i), l));
        for (name, l) in dense.chain([(names::LATENT.to_string(), latent)]) {
            named.push((format!("{name}.weight"), values(l.weight())?));
            if let Some(b) = l.bias() {
                named.push((format!("{name}.bias"), values(b)?));
            }
        }
        let get = |name: &str| {
            named
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
        };
        dekm_edge::Encoder::new(spec, get)
            .map(Some)
            .map_err(candle_core::Error::wrap)
    }
}

/// Latent vectors of all rows of `xs` (`[n, input_len]`), row-major `[n, d]`. A convolutional
/// encoder on the fast backend runs the edge crate's kernels, one sample per call on every
/// thread: without a backward pass to share its column matrices, im2col + GEMM is slower than
/// their indirect convolution, whose activations stay in L1 (RESULTS has both rates). Anything
/// else runs the candle graph in batches of `batch`.
pub fn embed(encoder: &Encoder, xs: &Tensor, batch: usize) -> Result<Vec<f32>> {
    if let Some(edge) = encoder.on_edge_kernels()? {
        return embed_on_edge(&edge, xs);
    }
    Ok(batched(xs, batch, |b| encoder.forward(b))?.0)
}

/// `layer`'s outputs for all rows of `xs`, computed `batch` rows at a time: row-major, with
/// their width (0 for no rows).
fn batched(
    xs: &Tensor,
    batch: usize,
    layer: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Vec<f32>, usize)> {
    let n = xs.dim(0)?;
    let (mut out, mut width) = (Vec::new(), 0);
    for start in (0..n).step_by(batch.max(1)) {
        let len = batch.min(n - start);
        let h = layer(&xs.narrow(0, start, len)?)?;
        width = h.dim(1)?;
        out.extend(h.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok((out, width))
}

/// A convolutional encoder's last feature map for every row of `xs`, `([n, f], f)` (f = 1,152
/// for a 28x28 image): what the `manifold` start lays out. `None` for a dense encoder, whose
/// start lays out the latent.
pub fn manifold_features(
    encoder: &Encoder,
    xs: &Tensor,
    batch: usize,
) -> Result<Option<(Vec<f32>, usize)>> {
    if matches!(encoder, Encoder::Dense { .. }) {
        return Ok(None);
    }
    batched(xs, batch, |b| encoder.pre_latent(b)).map(Some)
}

fn embed_on_edge(edge: &dekm_edge::Encoder, xs: &Tensor) -> Result<Vec<f32>> {
    let (n, len) = xs.dims2()?;
    if len != edge.input_len() {
        bail!(
            "embedding: samples have {len} values, the encoder takes {}",
            edge.input_len()
        );
    }
    let xs = xs.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = xs.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        bail!("embedding: CPU tensors only");
    };
    let data = &data[layout.start_offset()..][..n * len];
    let d = edge.latent_dim();
    let mut out = vec![0f32; n * d];
    if n > 0 && d > 0 {
        data.par_chunks(len)
            .zip(out.par_chunks_mut(d))
            .try_for_each_init(|| edge.workspace(), |ws, (x, z)| edge.encode(x, ws, z))
            .map_err(candle_core::Error::wrap)?;
    }
    Ok(out)
}
