//! Convolutions for a GPU made of one operation: candle's `conv2d`, which on CUDA is an
//! `im2col` kernel and one cuBLAS GEMM. The fused kernels of this module's parent are CPU code;
//! candle's own layers would run on a GPU, but its `conv_transpose2d` is a direct kernel (one
//! thread per output value looping over every input channel and kernel tap, no tiling) and
//! `conv2d`'s backward pass computes the input gradient through it, so every training step of a
//! convolutional autoencoder would spend its time there: in the decoder's three layers and in
//! the encoder's backward pass.
//!
//! Here nothing calls `conv_transpose2d`:
//! - a convolution's value is candle's `conv2d`, computed on detached tensors, and the graph
//!   sees it through [`Backward`], an op whose value is zero and whose backward pass is ours:
//!   the input gradient is the transposed convolution below, the weight gradient a `conv2d` of
//!   the input with the output gradient (candle's own formula);
//! - a transposed convolution of stride `s` is `s²` stride-1 convolutions, one per output phase,
//!   each with the kernel taps that land on that phase ("sub-pixel" convolution), run as one
//!   `conv2d` whose output channels are the phases, then interleaved; it is differentiable
//!   through the convolution above, so the decoder's backward pass is `conv2d`s too.
//!
//! Activations are channels-first, `[b, c, h, w]`, as candle's layers take them; weights keep
//! candle's layouts and names, so a model trained here exports and loads as any other.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use dekm_shared::ConvGeometry;

use super::{four_dimensional, out_side, parameters, weight_shape};

/// `conv2d(x[b, c, h, w], w[o, c, kh, kw])` → `[b, o, oh, ow]` with `stride` and symmetric
/// padding `(rows, columns)`, differentiable without `conv_transpose2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: (usize, usize)) -> Result<Tensor> {
    let y = plain_conv2d(&x.detach(), &w.detach(), stride, pad)?;
    if !(x.track_op() || w.track_op()) {
        return Ok(y);
    }
    y + x.apply_op2(w, Backward { stride, pad })?
}

/// `conv_transpose2d(x[b, ci, h, w], w[ci, co, kh, kw])` cropped to `out` `(rows, columns)`
/// after dropping `pad` `(rows, columns)` from the start: the adjoint of a [`conv2d`] with
/// that stride and padding from `[b, co, out.0, out.1]`. Differentiable.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: (usize, usize),
    out: (usize, usize),
) -> Result<Tensor> {
    transposed(x, w, stride, pad, out, conv2d)
}

/// candle's `conv2d`, with the padding made explicit when the two axes differ.
fn plain_conv2d(x: &Tensor, w: &Tensor, stride: usize, (ph, pw): (usize, usize)) -> Result<Tensor> {
    if ph == pw {
        return x.conv2d(w, ph, stride, 1, 1);
    }
    x.pad_with_zeros(2, ph, ph)?
        .pad_with_zeros(3, pw, pw)?
        .conv2d(w, 0, stride, 1, 1)
}

/// The transposed convolution by output phase, its stride-1 convolutions run by `conv`.
///
/// With `F[t] = Σ_{s·h + i = t} x[h]·w[i]` the uncropped output, the phase `a` of
/// `t = s·m + a` takes the taps `i = s·j + a` only: `F[s·m + a] = Σ_j x[m − j]·w[s·j + a]`, a
/// full stride-1 convolution of `x` with those `⌈k/s⌉` taps (the kernel padded with zeros to a
/// multiple of `s`), reversed, because `conv2d` correlates.
fn transposed(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    (ph, pw): (usize, usize),
    (oh, ow): (usize, usize),
    conv: fn(&Tensor, &Tensor, usize, (usize, usize)) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, ci, h, wd) = x.dims4()?;
    let (wci, co, kh, kw) = w.dims4()?;
    if wci != ci {
        candle_core::bail!(
            "transposed convolution: input has {ci} channels, weight is [{wci}, {co}, {kh}, {kw}]"
        );
    }
    // Along an axis of one input row the stride moves nothing (a 1-D layer's height).
    let (sh, sw) = (
        if h == 1 { 1 } else { stride },
        if wd == 1 { 1 } else { stride },
    );
    let (jh, jw) = (kh.div_ceil(sh), kw.div_ceil(sw));
    let taps = w
        .pad_with_zeros(2, 0, jh * sh - kh)?
        .pad_with_zeros(3, 0, jw * sw - kw)?
        .reshape((ci, co, jh, sh, jw, sw))?;
    let kernel = reverse(&reverse(&taps, 2)?, 4)?
        .permute([3, 5, 1, 0, 2, 4])?
        .reshape((sh * sw * co, ci, jh, jw))?;
    // [b, (phase row, phase column, co), mh, mw], then the phases interleaved.
    let phases = conv(x, &kernel, 1, (jh - 1, jw - 1))?;
    let (mh, mw) = (h + jh - 1, wd + jw - 1);
    let full = phases
        .reshape((b, sh, sw, co, mh, mw))?
        .permute([0, 3, 4, 1, 5, 2])?
        .reshape((b, co, mh * sh, mw * sw))?;
    window(&window(&full, 2, ph, oh)?, 3, pw, ow)
}

/// `len` values of axis `dim` from `start`, zeros past the end (where `F` is zero).
fn window(t: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor> {
    let n = t.dim(dim)?;
    if start + len <= n {
        return t.narrow(dim, start, len);
    }
    let have = n.saturating_sub(start);
    t.narrow(dim, start.min(n), have)?
        .pad_with_zeros(dim, 0, len - have)
}

/// `t` with axis `dim` in reverse order: its slices joined back to front, so no index tensor
/// travels from the host to the device at every step (the axis is a kernel's few taps).
fn reverse(t: &Tensor, dim: usize) -> Result<Tensor> {
    let n = t.dim(dim)?;
    if n == 1 {
        return Ok(t.clone());
    }
    let slices = (0..n)
        .rev()
        .map(|i| t.narrow(dim, i, 1))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&slices, dim)
}

/// The gradients of a convolution with `stride` and `pad`, as a graph node of value zero on
/// `(input, weight)`; [`conv2d`] adds it to the convolution's detached value.
struct Backward {
    stride: usize,
    pad: (usize, usize),
}

impl Backward {
    /// Zeros the shape of the convolution's output, on the inputs' device.
    fn zeros<S>(&self, s: &S, x: &Layout, w: &Layout) -> Result<(S, Shape)>
    where
        S: BackendStorage<Device: BackendDevice<Storage = S>>,
    {
        let ((b, _, h, wd), (o, _, kh, kw)) = (x.shape().dims4()?, w.shape().dims4()?);
        let (ph, pw) = self.pad;
        let shape = Shape::from((
            b,
            o,
            out_side(h, kh, self.stride, ph)?,
            out_side(wd, kw, self.stride, pw)?,
        ));
        Ok((s.device().zeros_impl(&shape, s.dtype())?, shape))
    }
}

impl CustomOp2 for Backward {
    fn name(&self) -> &'static str {
        "conv2d-backward"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        x: &Layout,
        _: &CpuStorage,
        w: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.zeros(s, x, w)
    }

    fn cuda_fwd(
        &self,
        s: &CudaStorage,
        x: &Layout,
        _: &CudaStorage,
        w: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.zeros(s, x, w)
    }

    /// The input gradient is the transposed convolution of `grad` (skipped when nothing
    /// upstream needs it: the data); the weight gradient correlates the input with `grad`
    /// dilated by the stride, batch as channels, as candle's own backward pass does.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let (s, (ph, pw)) = (self.stride, self.pad);
        let grad_x = if x.track_op() {
            Some(transposed(grad, w, s, (ph, pw), (h, wd), plain_conv2d)?)
        } else {
            None
        };
        let grad_w = if w.track_op() {
            let x = x.detach();
            let x = if ph == pw {
                x
            } else {
                x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?
            };
            let pad = if ph == pw { ph } else { 0 };
            let g = grad.detach().transpose(0, 1)?.contiguous()?;
            let gw = x
                .transpose(0, 1)?
                .conv2d(&g, pad, 1, s, 1)?
                .transpose(0, 1)?;
            Some(gw.narrow(2, 0, kh)?.narrow(3, 0, kw)?.contiguous()?)
        } else {
            None
        };
        Ok((grad_x, grad_w))
    }
}

/// A convolution layer on `conv2d` above (channels-first), with candle's parameter names and
/// layouts; no activation. A 1-D layer runs as the one-row case.
#[derive(Debug, Clone)]
pub struct GemmConv2d {
    weight: Tensor,
    bias: Tensor,
    g: ConvGeometry,
}

impl GemmConv2d {
    /// Creates or loads `weight` (`[out, in, kh, kw]`, or `[out, in, k]` when `temporal`) and
    /// `bias` `[out]` under `vb` for a layer of geometry `g`.
    pub fn new(g: ConvGeometry, temporal: bool, vb: VarBuilder) -> Result<Self> {
        let (o, c) = (g.output.channels, g.input.channels);
        let (weight, bias) = parameters(&vb, &weight_shape(o, c, &g, temporal), o)?;
        Ok(Self { weight, bias, g })
    }

    /// The layer's linear part read backwards: for `grad` `[b, out, oh, ow]`, the gradient of
    /// `Σ grad · conv(x)` with respect to `x`, differentiable in the weight (WGAN-GP's penalty
    /// is a loss on it).
    pub fn adjoint(&self, grad: &Tensor) -> Result<Tensor> {
        let (g, w) = (&self.g, four_dimensional(&self.weight, &self.g)?);
        let pad = (g.pad.height, g.pad.width);
        conv_transpose2d(grad, &w, g.stride, pad, (g.input.height, g.input.width))
    }
}

impl Module for GemmConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (g, w) = (&self.g, four_dimensional(&self.weight, &self.g)?);
        let y = conv2d(x, &w, g.stride, (g.pad.height, g.pad.width))?;
        y.broadcast_add(&self.bias.reshape((1, g.output.channels, 1, 1))?)
    }
}

/// A transposed convolution layer on `conv_transpose2d` above, inverting a convolution of
/// geometry `g` exactly (output padding included), with candle's names; no activation.
#[derive(Debug, Clone)]
pub struct GemmConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    g: ConvGeometry,
}

impl GemmConvTranspose2d {
    /// Creates or loads `weight` (`[in, out, kh, kw]` or `[in, out, k]`) and `bias` `[out]`
    /// under `vb`; `in` is `g`'s output channels.
    pub fn new(g: ConvGeometry, temporal: bool, vb: VarBuilder) -> Result<Self> {
        let (ci, co) = (g.output.channels, g.input.channels);
        let (weight, bias) = parameters(&vb, &weight_shape(ci, co, &g, temporal), co)?;
        Ok(Self { weight, bias, g })
    }
}

impl Module for GemmConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (g, w) = (&self.g, four_dimensional(&self.weight, &self.g)?);
        let pad = (g.pad.height, g.pad.width);
        let y = conv_transpose2d(x, &w, g.stride, pad, (g.input.height, g.input.width))?;
        y.broadcast_add(&self.bias.reshape((1, g.input.channels, 1, 1))?)
    }
}
