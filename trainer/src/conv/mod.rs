//! Fast CPU convolutions for training: each convolution and transposed convolution is one
//! candle custom op over `(input, weight, bias)`, with its own backward pass, built on `im2col` /
//! `col2im` and three GEMMs.
//!
//! candle 0.11's CPU `conv_transpose2d` is a direct loop and `conv2d`'s backward pass goes
//! through it, which makes training the paper's autoencoder about ten times slower than PyTorch.
//! Expressing the convolution through candle's own matmul fixes the multiply-adds but not the
//! rest: candle's autograd gives every intermediate tensor a zero-filled gradient buffer plus an
//! addition, so the 40 MB `im2col` matrix of a layer cost more in memory traffic than its GEMM.
//! Here the whole layer is one node of the graph: the column matrix lives in a reused scratch
//! buffer and never becomes a tensor, bias and ReLU are fused into the output pass, and the
//! backward pass computes exactly three things (input, weight and bias gradients), skipping the
//! input gradient when nothing upstream needs it.
//!
//! Activations are channels-last, `[b, h, w, c]`, as in XNNPACK and oneDNN's blocked layouts:
//! - one row of the column matrix is one output pixel's patch, `k·k` runs of `c` contiguous
//!   floats, so `im2col` and `col2im` move whole vectors instead of gathering single floats
//!   through an index map (that gather was a fifth of a training step);
//! - a GEMM's output `[pixels, channels]` is already the next layer's input;
//! - each image is one contiguous block, so the batch splits into tasks that own their part of
//!   every output.
//!
//! Each op cuts the batch into a few tasks per thread; a task runs the gathers, single-threaded
//! GEMMs and scatters of its images in sub-chunks whose column matrix stays in the core's L2
//! cache. A layer is then one parallel region, and weight and bias gradients are summed per task
//! and then in task order, so results do not depend on which thread ran which task.
//!
//! Where the parts live: the column matrix, its tasks and GEMMs in `columns`; the two custom
//! ops with their backward passes in `ops`; here the public functions and the layers built on
//! them.

mod columns;
mod ops;
#[cfg(test)]
mod tests;

use candle_core::{Module, Result, Tensor, bail};
use candle_nn::VarBuilder;
use columns::Geometry;
use ops::{Conv2dOp, ConvTranspose2dOp};

fn out_side(n: usize, k: usize, stride: usize, pad: usize) -> Result<usize> {
    match (n + 2 * pad).checked_sub(k) {
        Some(s) if stride > 0 => Ok(s / stride + 1),
        _ => bail!("convolution: input side {n} too small for kernel {k} with padding {pad}"),
    }
}

fn check_bias(bias: &Tensor, n: usize, what: &str) -> Result<()> {
    if bias.dims() != [n] {
        bail!("{what}: bias has shape {:?}, expected [{n}]", bias.dims());
    }
    Ok(())
}

/// `conv2d(x[b, h, w, c], w[o, c, k, k]) + bias[o]` → `[b, oh, ow, o]` (channels-last in and
/// out; the weight keeps candle's layout), with symmetric `pad` and `stride`, followed by ReLU when `relu`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    pad: usize,
    relu: bool,
) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (o, wc, k, k2) = weight.dims4()?;
    if wc != c || k != k2 {
        bail!("conv2d: input has {c} channels, weight is [{o}, {wc}, {k}, {k2}]");
    }
    check_bias(bias, o, "conv2d")?;
    let (oh, ow) = (out_side(h, k, stride, pad)?, out_side(w, k, stride, pad)?);
    let g = Geometry {
        b,
        c,
        h,
        w,
        k,
        stride,
        pad,
        oh,
        ow,
    };
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Conv2dOp { g, o, relu },
    )
}

/// `conv_transpose2d(x[b, h, w, ci], w[ci, co, k, k]) + bias[co]` → `[b, ho, wo, co]`
/// (channels-last), followed by ReLU when `relu`: the adjoint of a `conv2d` from
/// `[b, ho, wo, co]`, with `ho = (h − 1)·stride − 2·pad + k + output_padding`.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (stride, pad, output_padding): (usize, usize, usize),
    relu: bool,
) -> Result<Tensor> {
    let (b, h, w, ci) = x.dims4()?;
    let (wci, co, k, k2) = weight.dims4()?;
    if wci != ci || k != k2 {
        bail!("conv_transpose2d: input has {ci} channels, weight is [{wci}, {co}, {k}, {k2}]");
    }
    check_bias(bias, co, "conv_transpose2d")?;
    if stride == 0 || output_padding >= stride {
        bail!(
            "conv_transpose2d: output padding {output_padding} must be smaller than stride {stride}"
        );
    }
    let side = |n: usize| ((n - 1) * stride + k + output_padding).checked_sub(2 * pad);
    let (Some(ho), Some(wo)) = (side(h), side(w)) else {
        bail!("conv_transpose2d: padding {pad} too large for kernel {k}");
    };
    let g = Geometry {
        b,
        c: co,
        h: ho,
        w: wo,
        k,
        stride,
        pad,
        oh: h,
        ow: w,
    };
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        ConvTranspose2dOp { g, ci, relu },
    )
}

/// `[b, c, h, w]` → `[b, h, w, c]`, the layout of [`conv2d`] and [`conv_transpose2d`].
pub fn to_channels_last(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 2, 3, 1))?.contiguous()
}

/// `[b, h, w, c]` → `[b, c, h, w]`, candle's layout (and the export's flattening order).
pub fn to_channels_first(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 1, 2))?.contiguous()
}

/// A convolution layer using [`conv2d`] (channels-last tensors), with candle's parameter names
/// and initialisation, and the ReLU that follows it fused in when `relu`.
#[derive(Debug, Clone)]
pub struct FastConv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    pad: usize,
    relu: bool,
}

impl FastConv2d {
    /// Creates or loads `weight` `[out, in, k, k]` and `bias` `[out]` under `vb`.
    pub fn new(
        (input, output, k): (usize, usize, usize),
        stride: usize,
        pad: usize,
        relu: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv = candle_nn::conv2d(input, output, k, Default::default(), vb)?;
        let bias = conv
            .bias()
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("conv2d without bias".into()))?;
        Ok(Self {
            weight: conv.weight().clone(),
            bias,
            stride,
            pad,
            relu,
        })
    }
}

impl FastConv2d {
    /// The weight, `[out, in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for FastConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(
            x,
            &self.weight,
            &self.bias,
            self.stride,
            self.pad,
            self.relu,
        )
    }
}

/// A transposed convolution layer using [`conv_transpose2d`], with candle's names, and the ReLU
/// that follows it fused in when `relu`.
#[derive(Debug, Clone)]
pub struct FastConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    cfg: candle_nn::ConvTranspose2dConfig,
    relu: bool,
}

impl FastConvTranspose2d {
    /// Creates or loads `weight` `[in, out, k, k]` and `bias` `[out]` under `vb`.
    pub fn new(
        (input, output, k): (usize, usize, usize),
        cfg: candle_nn::ConvTranspose2dConfig,
        relu: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv = candle_nn::conv_transpose2d(input, output, k, cfg, vb)?;
        let bias = conv
            .bias()
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("conv_transpose2d without bias".into()))?;
        Ok(Self {
            weight: conv.weight().clone(),
            bias,
            cfg,
            relu,
        })
    }
}

impl Module for FastConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.cfg;
        conv_transpose2d(
            x,
            &self.weight,
            &self.bias,
            (c.stride, c.padding, c.output_padding),
            self.relu,
        )
    }
}
