//! Fast CPU convolutions for training: `im2col` / `col2im` as candle custom ops, each the other's
//! backward, with every multiply-add in one large GEMM (candle's `matmul`, backed by `gemm`).
//!
//! candle 0.11's CPU `conv_transpose2d` is a direct loop and `conv2d`'s backward pass goes
//! through it, which makes training the paper's autoencoder about ten times slower than PyTorch.
//! Here a convolution is `W[O, C·k·k] · im2col(x)[C·k·k, B·L]` and a transposed convolution is
//! `col2im(Wᵀ · x)`; candle's autograd differentiates the matmuls and the custom ops supply the
//! adjoint of the data movement, so gradients for input, weight and bias all come from GEMMs.
//!
//! Activations are channel-major, `[c, b, h, w]`: a convolution's GEMM output `[o, b·oh·ow]` is
//! then already the next layer's input, with no transposes, and the bias gradient is a reduction
//! over the contiguous last axis.

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Result, Shape, Tensor, bail};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// Shape of one convolution: channel-major input `[c, b, h, w]`, square kernel, output
/// spatial size `oh x ow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    fn cols(&self) -> usize {
        self.b * self.oh * self.ow
    }

    /// Input coordinate read by output `o` at kernel offset `kk`, if inside the image.
    fn src(&self, o: usize, kk: usize, limit: usize) -> Option<usize> {
        (o * self.stride + kk)
            .checked_sub(self.pad)
            .filter(|&i| i < limit)
    }

    /// Outputs `lo..hi` along an axis of `outs` positions whose input `o·stride + kk − pad` lies
    /// in `0..limit`, so the inner loops run without bounds tests.
    fn valid(&self, kk: usize, limit: usize, outs: usize) -> (usize, usize) {
        let lo = self.pad.saturating_sub(kk).div_ceil(self.stride);
        let hi = match (limit + self.pad).checked_sub(kk + 1) {
            Some(last) => (last / self.stride + 1).min(outs),
            None => 0,
        };
        (lo.min(hi), hi)
    }
}

fn contiguous<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    len: usize,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: only f32 is supported");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) if end - start == len => Ok(&data[start..end]),
        _ => bail!("{op}: input must be contiguous with {len} elements"),
    }
}

/// `[c, b, h, w]` → `[c·k·k, b·oh·ow]`; row `(ci, ki, kj)` matches a weight reshaped to `[O, C·k·k]`.
struct Im2Col(Geometry);

/// The adjoint of [`Im2Col`]: `[c·k·k, b·oh·ow]` → `[c, b, h, w]`, summing overlapping patches.
struct Col2Im(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "dekm-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous(storage, layout, g.b * g.c * g.h * g.w, self.name())?;
        let (cols, l) = (g.cols(), g.oh * g.ow);
        let mut out = vec![0f32; g.rows() * cols];
        out.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
            let (ci, ki, kj) = (r / (g.k * g.k), r / g.k % g.k, r % g.k);
            let (x0, x1) = g.valid(kj, g.w, g.ow);
            for bi in 0..g.b {
                let plane = &x[(ci * g.b + bi) * g.h * g.w..][..g.h * g.w];
                let dst = &mut row[bi * l..][..l];
                for oy in 0..g.oh {
                    let Some(iy) = g.src(oy, ki, g.h) else {
                        continue;
                    };
                    let src = &plane[iy * g.w..][..g.w];
                    let line = &mut dst[oy * g.ow..][..g.ow];
                    let base = x0 * g.stride + kj - g.pad;
                    for (v, ix) in line[x0..x1].iter_mut().zip((base..).step_by(g.stride)) {
                        *v = src[ix];
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((g.rows(), cols))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "dekm-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = contiguous(storage, layout, g.rows() * g.cols(), self.name())?;
        let (n, l) = (g.cols(), g.oh * g.ow);
        let mut out = vec![0f32; g.b * g.c * g.h * g.w];
        // Planes (ci, bi) are disjoint, so each thread owns the plane it accumulates into.
        out.par_chunks_mut(g.h * g.w)
            .enumerate()
            .for_each(|(p, plane)| {
                let (ci, bi) = (p / g.b, p % g.b);
                for ki in 0..g.k {
                    for kj in 0..g.k {
                        let (x0, x1) = g.valid(kj, g.w, g.ow);
                        let base = x0 * g.stride + kj - g.pad;
                        let row = &cols[(ci * g.k * g.k + ki * g.k + kj) * n + bi * l..][..l];
                        for oy in 0..g.oh {
                            let Some(iy) = g.src(oy, ki, g.h) else {
                                continue;
                            };
                            let dst = &mut plane[iy * g.w..][..g.w];
                            let src = &row[oy * g.ow..][..g.ow];
                            for (&v, ix) in src[x0..x1].iter().zip((base..).step_by(g.stride)) {
                                dst[ix] += v;
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((g.c, g.b, g.h, g.w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Im2Col(self.0))?))
    }
}

fn out_side(n: usize, k: usize, stride: usize, pad: usize) -> Result<usize> {
    match (n + 2 * pad).checked_sub(k) {
        Some(s) if stride > 0 => Ok(s / stride + 1),
        _ => bail!("convolution: input side {n} too small for kernel {k} with padding {pad}"),
    }
}

/// `conv2d(x[c, b, h, w], w[o, c, k, k]) + bias[o]` → `[o, b, oh, ow]` (channel-major in and
/// out), with symmetric `pad` and `stride`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    let (c, b, h, w) = x.dims4()?;
    let (o, wc, k, k2) = weight.dims4()?;
    if wc != c || k != k2 {
        bail!("conv2d: input has {c} channels, weight is [{o}, {wc}, {k}, {k2}]");
    }
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
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    let y = weight.reshape((o, g.rows()))?.matmul(&cols)?;
    y.broadcast_add(&bias.reshape((o, 1))?)?
        .reshape((o, b, oh, ow))
}

/// `conv_transpose2d(x[ci, b, h, w], w[ci, co, k, k]) + bias[co]` → `[co, b, ho, wo]`
/// (channel-major): the adjoint of a `conv2d` from `[co, b, ho, wo]`, with
/// `ho = (h − 1)·stride − 2·pad + k + output_padding`.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    pad: usize,
    output_padding: usize,
) -> Result<Tensor> {
    let (ci, b, h, w) = x.dims4()?;
    let (wci, co, k, k2) = weight.dims4()?;
    if wci != ci || k != k2 {
        bail!("conv_transpose2d: input has {ci} channels, weight is [{wci}, {co}, {k}, {k2}]");
    }
    let side = |n: usize| ((n - 1) * stride + k + output_padding).checked_sub(2 * pad);
    let (Some(ho), Some(wo)) = (side(h), side(w)) else {
        bail!("conv_transpose2d: padding {pad} too large for kernel {k}");
    };
    if output_padding >= stride.max(1) {
        bail!(
            "conv_transpose2d: output padding {output_padding} must be smaller than stride {stride}"
        );
    }
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
    let xs = x.contiguous()?.reshape((ci, b * h * w))?;
    let cols = weight.reshape((ci, g.rows()))?.t()?.matmul(&xs)?;
    let y = cols.apply_op1(Col2Im(g))?.reshape((co, b * ho * wo))?;
    y.broadcast_add(&bias.reshape((co, 1))?)?
        .reshape((co, b, ho, wo))
}

/// `[b, c, h, w]` → `[c, b, h, w]` and back (the same permutation).
pub fn swap_batch_channels(x: &Tensor) -> Result<Tensor> {
    x.transpose(0, 1)?.contiguous()
}

/// A convolution layer using [`conv2d`] (channel-major tensors), with candle's parameter names
/// and initialisation.
#[derive(Debug, Clone)]
pub struct FastConv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    pad: usize,
}

impl FastConv2d {
    /// Creates or loads `weight` `[out, in, k, k]` and `bias` `[out]` under `vb`.
    pub fn new(
        input: usize,
        output: usize,
        k: usize,
        stride: usize,
        pad: usize,
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
        })
    }
}

impl Module for FastConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, &self.bias, self.stride, self.pad)
    }
}

/// A transposed convolution layer using [`conv_transpose2d`], with candle's names.
#[derive(Debug, Clone)]
pub struct FastConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    pad: usize,
    output_padding: usize,
}

impl FastConvTranspose2d {
    /// Creates or loads `weight` `[in, out, k, k]` and `bias` `[out]` under `vb`.
    pub fn new(
        input: usize,
        output: usize,
        k: usize,
        cfg: candle_nn::ConvTranspose2dConfig,
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
            stride: cfg.stride,
            pad: cfg.padding,
            output_padding: cfg.output_padding,
        })
    }
}

impl Module for FastConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_transpose2d(
            x,
            &self.weight,
            &self.bias,
            self.stride,
            self.pad,
            self.output_padding,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;
    use candle_core::{Device, Var};
    use rand::Rng;

    fn random(shape: &[usize], seed: u64) -> Var {
        let mut r = rng(seed, 0);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        let err = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err / scale < 1e-4, "{what}: relative error {}", err / scale);
    }

    /// Forward output and gradients for input, weight and bias against candle's reference ops,
    /// with a random upstream gradient (loss = Σ y·r).
    fn check(
        x: &[usize],
        w: &[usize],
        stride: usize,
        pad: usize,
        out_pad: Option<usize>,
        seed: u64,
    ) {
        let (xv, wv, bv) = (
            random(x, seed),
            random(w, seed + 1),
            random(&[if out_pad.is_some() { w[1] } else { w[0] }], seed + 2),
        );
        let xc = swap_batch_channels(&xv).unwrap();
        let ours = match out_pad {
            None => conv2d(&xc, &wv, &bv, stride, pad).unwrap(),
            Some(op) => conv_transpose2d(&xc, &wv, &bv, stride, pad, op).unwrap(),
        };
        let ours = swap_batch_channels(&ours).unwrap();
        let reference = match out_pad {
            None => xv.conv2d(&wv, pad, stride, 1, 1).unwrap(),
            Some(op) => xv.conv_transpose2d(&wv, pad, op, stride, 1).unwrap(),
        };
        let o = reference.dim(1).unwrap();
        let reference = reference
            .broadcast_add(&bv.reshape((1, o, 1, 1)).unwrap())
            .unwrap();
        let what = format!("x {x:?} w {w:?} s {stride} p {pad} op {out_pad:?}");
        close(&ours, &reference, &format!("{what} forward"));
        let up = random(reference.dims(), seed + 3);
        let g1 = (ours * up.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (reference * up.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (v, name) in [(&xv, "input"), (&wv, "weight"), (&bv, "bias")] {
            close(
                g1.get(v).unwrap(),
                g2.get(v).unwrap(),
                &format!("{what} grad {name}"),
            );
        }
    }

    #[test]
    fn conv2d_matches_candle_on_the_paper_layers_and_odd_shapes() {
        check(&[2, 1, 28, 28], &[32, 1, 5, 5], 2, 2, None, 1);
        check(&[2, 32, 14, 14], &[64, 32, 5, 5], 2, 2, None, 2);
        check(&[2, 64, 7, 7], &[128, 64, 3, 3], 2, 0, None, 3);
        check(&[1, 3, 9, 9], &[4, 3, 3, 3], 1, 1, None, 4);
    }

    /// Direct-loop convolution and its gradients in f64, for shapes where candle's own backward
    /// pass is wrong (it mis-sizes the input gradient when `(side + 2·pad − k) % stride != 0`).
    fn naive(x: &Tensor, w: &Tensor, r: &Tensor, stride: usize, pad: usize) -> [Vec<f64>; 4] {
        let v = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&x| f64::from(x))
                .collect::<Vec<_>>()
        };
        let ((b, c, h, wd), (o, _, k, _), (_, _, oh, ow)) =
            (x.dims4().unwrap(), w.dims4().unwrap(), r.dims4().unwrap());
        let (xs, ws, rs) = (v(x), v(w), v(r));
        let (mut y, mut gx, mut gw, mut gb) = (
            vec![0.0; b * o * oh * ow],
            vec![0.0; xs.len()],
            vec![0.0; ws.len()],
            vec![0.0; o],
        );
        for (bi, oi, oy, ox) in (0..b).flat_map(|bi| {
            (0..o).flat_map(move |oi| {
                (0..oh).flat_map(move |oy| (0..ow).map(move |ox| (bi, oi, oy, ox)))
            })
        }) {
            let yi = ((bi * o + oi) * oh + oy) * ow + ox;
            gb[oi] += rs[yi];
            for (ci, ki, kj) in
                (0..c).flat_map(|ci| (0..k).flat_map(move |ki| (0..k).map(move |kj| (ci, ki, kj))))
            {
                let (iy, ix) = (
                    (oy * stride + ki) as isize - pad as isize,
                    (ox * stride + kj) as isize - pad as isize,
                );
                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                    continue;
                }
                let xi = ((bi * c + ci) * h + iy as usize) * wd + ix as usize;
                let wi = ((oi * c + ci) * k + ki) * k + kj;
                y[yi] += ws[wi] * xs[xi];
                gx[xi] += ws[wi] * rs[yi];
                gw[wi] += xs[xi] * rs[yi];
            }
        }
        [y, gx, gw, gb]
    }

    #[test]
    fn conv2d_matches_direct_loops_on_uneven_strides() {
        for (x, w, stride, pad) in [
            ([3, 2, 11, 13], [5, 2, 5, 5], 3, 2),
            ([1, 1, 8, 7], [2, 1, 3, 3], 2, 1),
        ] {
            let (xv, wv, bv) = (random(&x, 20), random(&w, 21), random(&[w[0]], 22));
            let zero = Tensor::zeros(w[0], candle_core::DType::F32, &Device::Cpu).unwrap();
            let xc = swap_batch_channels(&xv).unwrap();
            let y = swap_batch_channels(&conv2d(&xc, &wv, &zero, stride, pad).unwrap()).unwrap();
            let up = random(y.dims(), 23);
            let want = naive(&xv, &wv, &up, stride, pad);
            let yb = swap_batch_channels(&conv2d(&xc, &wv, &bv, stride, pad).unwrap()).unwrap();
            let g = (yb * up.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let got = [
                &y,
                g.get(&xv).unwrap(),
                g.get(&wv).unwrap(),
                g.get(&bv).unwrap(),
            ];
            for ((got, want), what) in
                got.iter()
                    .zip(&want)
                    .zip(["forward", "grad input", "grad weight", "grad bias"])
            {
                let want = Tensor::from_vec(
                    want.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                    want.len(),
                    &Device::Cpu,
                )
                .unwrap();
                close(got, &want, &format!("{x:?} {w:?} s{stride} p{pad} {what}"));
            }
        }
    }

    #[test]
    fn conv_transpose2d_matches_candle_with_output_padding() {
        check(&[2, 128, 3, 3], &[128, 64, 3, 3], 2, 0, Some(0), 6);
        check(&[2, 64, 7, 7], &[64, 32, 5, 5], 2, 2, Some(1), 7);
        check(&[2, 32, 14, 14], &[32, 1, 5, 5], 2, 2, Some(1), 8);
        check(&[1, 3, 5, 5], &[3, 2, 3, 3], 1, 1, Some(0), 9);
        check(&[2, 2, 4, 6], &[2, 3, 5, 5], 3, 1, Some(2), 10);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let x = random(&[2, 1, 8, 8], 1);
        let w = random(&[4, 3, 3, 3], 2);
        let b = random(&[4], 3);
        assert!(conv2d(&x, &w, &b, 1, 0).is_err());
        let w = random(&[4, 2, 9, 9], 2);
        assert!(conv2d(&x, &w, &b, 1, 0).is_err());
    }
}
