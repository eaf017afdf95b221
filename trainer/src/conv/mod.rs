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
//! them. A GPU runs the layers of `gemm` instead (candle's `conv2d` for everything), and 1-D
//! layers on candle's ops are in `candle1d`.

mod candle1d;
mod columns;
mod gemm;
mod ops;
#[cfg(test)]
mod tests;

use candle_core::{Module, Result, Tensor, bail};
use candle_nn::VarBuilder;
pub use candle1d::{CandleConv1d, CandleDeconv1d};
use columns::Geometry;
use dekm_shared::ConvGeometry;
pub use gemm::{GemmConv2d, GemmConvTranspose2d};
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

/// `conv2d(x[b, h, w, c], w[o, c, kh, kw]) + bias[o]` → `[b, oh, ow, o]` (channels-last in and
/// out; the weight keeps candle's layout), with `stride` along both axes and symmetric padding
/// `(rows, columns)`, followed by ReLU when `relu`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    (ph, pw): (usize, usize),
    relu: bool,
) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (o, wc, kh, kw) = weight.dims4()?;
    if wc != c {
        bail!("conv2d: input has {c} channels, weight is [{o}, {wc}, {kh}, {kw}]");
    }
    check_bias(bias, o, "conv2d")?;
    let (oh, ow) = (out_side(h, kh, stride, ph)?, out_side(w, kw, stride, pw)?);
    let g = Geometry {
        b,
        c,
        h,
        w,
        kh,
        kw,
        stride,
        ph,
        pw,
        oh,
        ow,
    };
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Conv2dOp { g, o, relu },
    )
}

/// `conv_transpose2d(x[b, h, w, ci], w[ci, co, kh, kw]) + bias[co]` → `[b, ho, wo, co]`
/// (channels-last), followed by ReLU when `relu`: the adjoint of a `conv2d` from
/// `[b, ho, wo, co]`, with `ho = (h − 1)·stride − 2·pad_h + kh + output_padding_h` (likewise
/// `wo`). Padding and output padding are `(rows, columns)`.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (stride, (ph, pw), (oph, opw)): (usize, (usize, usize), (usize, usize)),
    relu: bool,
) -> Result<Tensor> {
    let (b, h, w, ci) = x.dims4()?;
    let (wci, co, kh, kw) = weight.dims4()?;
    if wci != ci {
        bail!("conv_transpose2d: input has {ci} channels, weight is [{wci}, {co}, {kh}, {kw}]");
    }
    check_bias(bias, co, "conv_transpose2d")?;
    if stride == 0 || oph >= stride || opw >= stride {
        bail!(
            "conv_transpose2d: output padding ({oph}, {opw}) must be smaller than stride {stride}"
        );
    }
    let side = |n: usize, k: usize, pad: usize, op: usize| {
        ((n - 1) * stride + k + op).checked_sub(2 * pad)
    };
    let (Some(ho), Some(wo)) = (side(h, kh, ph, oph), side(w, kw, pw, opw)) else {
        bail!("conv_transpose2d: padding ({ph}, {pw}) too large for a {kh}x{kw} kernel");
    };
    let g = Geometry {
        b,
        c: co,
        h: ho,
        w: wo,
        kh,
        kw,
        stride,
        ph,
        pw,
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

/// A layer's weight and bias under candle's names, `weight` shaped `shape` as stored (and
/// exported): 4-D for a 2-D layer, PyTorch's 3-D `[.., .., k]` for a 1-D one. The values are
/// drawn again by the model's initialiser; candle's draw here only gives the variables a shape.
fn parameters(vb: &VarBuilder, shape: &[usize], bias: usize) -> Result<(Tensor, Tensor)> {
    let fan_in: usize = shape.iter().skip(1).product();
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    let init = candle_nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Ok((
        vb.get_with_hints(shape, "weight", init)?,
        vb.get_with_hints(bias, "bias", init)?,
    ))
}

/// The weight's shape for a convolution of geometry `g`: `[first, second, kh, kw]`, or
/// `[first, second, kw]` for a 1-D (`temporal`) layer.
fn weight_shape(first: usize, second: usize, g: &ConvGeometry, temporal: bool) -> Vec<usize> {
    let mut shape = vec![first, second];
    if !temporal {
        shape.push(g.kernel.height);
    }
    shape.push(g.kernel.width);
    shape
}

/// A stored weight of geometry `g` as the ops take it, `[g's out, g's in, kh, kw]`: a view of
/// the same values (the transposed layer's `[in, out, ..]` has the same two leading sizes, as
/// its input is `g`'s output).
fn four_dimensional(weight: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
    weight.reshape((
        g.output.channels,
        g.input.channels,
        g.kernel.height,
        g.kernel.width,
    ))
}

/// A convolution layer using [`conv2d`] (channels-last tensors), with candle's parameter names,
/// and the ReLU that follows it fused in when `relu`. A 1-D layer runs as the one-row case.
#[derive(Debug, Clone)]
pub struct FastConv2d {
    weight: Tensor,
    bias: Tensor,
    g: ConvGeometry,
    relu: bool,
}

impl FastConv2d {
    /// Creates or loads `weight` (`[out, in, kh, kw]`, or `[out, in, k]` when `temporal`) and
    /// `bias` `[out]` under `vb` for a layer of geometry `g`.
    pub fn new(g: ConvGeometry, temporal: bool, relu: bool, vb: VarBuilder) -> Result<Self> {
        let (o, c) = (g.output.channels, g.input.channels);
        let (weight, bias) = parameters(&vb, &weight_shape(o, c, &g, temporal), o)?;
        Ok(Self {
            weight,
            bias,
            g,
            relu,
        })
    }

    /// The weight as stored.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The layer's linear part read backwards: for `grad` `[b, oh, ow, out]`, the gradient of
    /// `Σ grad · conv(x)` with respect to `x`, `[b, h, w, in]` (a transposed convolution with
    /// the same weight, output padding restoring `x`'s size). Bias and ReLU are left out: the
    /// caller applies the activation's slopes. Being an op on the weight rather than candle's
    /// backward pass, it is itself differentiable in the weight, which a loss on an input
    /// gradient (WGAN-GP's penalty) needs.
    pub fn adjoint(&self, grad: &Tensor) -> Result<Tensor> {
        let (g, w) = (&self.g, four_dimensional(&self.weight, &self.g)?);
        let zero = Tensor::zeros(g.input.channels, w.dtype(), w.device())?;
        let pad = (g.pad.height, g.pad.width);
        conv_transpose2d(
            grad,
            &w,
            &zero,
            (g.stride, pad, g.transpose_output_padding()),
            false,
        )
    }
}

impl Module for FastConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (g, w) = (&self.g, four_dimensional(&self.weight, &self.g)?);
        conv2d(
            x,
            &w,
            &self.bias,
            g.stride,
            (g.pad.height, g.pad.width),
            self.relu,
        )
    }
}

/// A transposed convolution layer using [`conv_transpose2d`], with candle's names, inverting a
/// convolution of geometry `g` exactly (output padding included), and the ReLU that follows it
/// fused in when `relu`.
#[derive(Debug, Clone)]
pub struct FastConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    g: ConvGeometry,
    relu: bool,
}

impl FastConvTranspose2d {
    /// Creates or loads `weight` (`[in, out, kh, kw]` or `[in, out, k]`) and `bias` `[out]`
    /// under `vb`; `in` is `g`'s output channels.
    pub fn new(g: ConvGeometry, temporal: bool, relu: bool, vb: VarBuilder) -> Result<Self> {
        let (ci, co) = (g.output.channels, g.input.channels);
        let (weight, bias) = parameters(&vb, &weight_shape(ci, co, &g, temporal), co)?;
        Ok(Self {
            weight,
            bias,
            g,
            relu,
        })
    }
}

impl Module for FastConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (g, w) = (&self.g, four_dimensional(&self.weight, &self.g)?);
        let pad = (g.pad.height, g.pad.width);
        conv_transpose2d(
            x,
            &w,
            &self.bias,
            (g.stride, pad, g.transpose_output_padding()),
            self.relu,
        )
    }
}
