//! The 1-D layers on candle's own ops (`--conv candle`, the reference the others are tested
//! against; a GPU runs the one-row case of `gemm`).
//!
//! Both run candle's 2-D convolutions on one-row activations `[b, c, 1, len]` without padding,
//! because candle 0.11's 1-D ops cannot train: `conv_transpose1d` has no backward pass, and on
//! the CPU `conv1d`'s weight gradient is wrong (its im2col path copies a non-contiguous kernel
//! and then multiplies by the original, and the backward pass hands it a transposed one). The
//! 2-D ops' backward passes are right on these shapes once the padding is explicit and the input
//! is cut to the samples the kernel reaches: candle sizes the input gradient from the height
//! alone, so any width remainder would not add up.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use dekm_shared::ConvGeometry;

use super::parameters;

/// `relu(conv1d(x) + bias)` for geometry `g`, weight `[out, in, k]` under `vb`.
#[derive(Debug, Clone)]
pub struct CandleConv1d {
    weight: Tensor,
    bias: Tensor,
    g: ConvGeometry,
}

impl CandleConv1d {
    /// Creates or loads the layer's variables.
    pub fn new(g: ConvGeometry, vb: VarBuilder) -> Result<Self> {
        let (o, c, k) = (g.output.channels, g.input.channels, g.kernel.width);
        let (weight, bias) = parameters(&vb, &[o, c, k], o)?;
        Ok(Self { weight, bias, g })
    }
}

impl Module for CandleConv1d {
    /// `[b, in, 1, len]` → `[b, out, 1, out_len]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = &self.g;
        let (o, c, k) = (g.output.channels, g.input.channels, g.kernel.width);
        let pad = g.pad.width;
        let x = x.pad_with_zeros(3, pad, pad)?;
        // The samples the last output's kernel reaches; the rest have no gradient anyway.
        let reached = (g.output.width - 1) * g.stride + k;
        let w = self.weight.reshape((o, c, 1, k))?;
        x.narrow(3, 0, reached)?
            .conv2d(&w, 0, g.stride, 1, 1)?
            .broadcast_add(&self.bias.reshape((1, o, 1, 1))?)?
            .relu()
    }
}

/// The transposed 1-D convolution inverting geometry `g` (output padding included), weight
/// `[in, out, k]` under `vb` (`in` is `g`'s output channels); no activation.
#[derive(Debug, Clone)]
pub struct CandleDeconv1d {
    weight: Tensor,
    bias: Tensor,
    g: ConvGeometry,
}

impl CandleDeconv1d {
    /// Creates or loads the layer's variables.
    pub fn new(g: ConvGeometry, vb: VarBuilder) -> Result<Self> {
        let (ci, co, k) = (g.output.channels, g.input.channels, g.kernel.width);
        let (weight, bias) = parameters(&vb, &[ci, co, k], co)?;
        Ok(Self { weight, bias, g })
    }
}

impl Module for CandleDeconv1d {
    /// `[b, in, 1, out_len]` → `[b, out, 1, len]`: the full transposed convolution, its padding
    /// cropped off (and the output padding appended as zeros), then the bias.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = &self.g;
        let (ci, co, k) = (g.output.channels, g.input.channels, g.kernel.width);
        let w = self.weight.reshape((ci, co, 1, k))?;
        let full = x.conv_transpose2d(&w, 0, 0, g.stride, 1)?;
        let (pad, len) = (g.pad.width, g.input.width);
        let short = (pad + len).saturating_sub(full.dim(3)?);
        let full = if short > 0 {
            full.pad_with_zeros(3, 0, short)?
        } else {
            full
        };
        full.narrow(3, pad, len)?
            .broadcast_add(&self.bias.reshape((1, co, 1, 1))?)
    }
}
