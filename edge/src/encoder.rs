//! The encoder forward pass without candle: convolutions as an `im2col` gather (a precomputed
//! index map) + one register-tiled matrix product per layer, written with explicit SIMD and run
//! with the widest vectors the CPU has ([`pulp`] dispatch: AVX-512, AVX2+FMA, NEON). General
//! GEMM libraries (nalgebra's `matrixmultiply`, the `gemm` crate) allocate packing buffers on
//! every call and, at one image's sizes, ran slower here (docs/RESULTS.md). Dense layers are
//! nalgebra matrix-vector products. ReLU after every layer but the latent one.
//!
//! All buffers live in a [`Workspace`] sized once from the [`EncoderSpec`], so encoding a sample
//! allocates nothing (`tests/no_alloc.rs` counts).

use alloc::{format, string::String, vec, vec::Vec};

use dekm_shared::{ConvGeometry, EncoderSpec, names};
use nalgebra::{DMatrixView, DMatrixViewMut};

/// A missing or mis-sized weight, or a sample of the wrong length.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EncoderError {
    /// The layer specification itself is inconsistent.
    #[error("encoder spec: {0}")]
    Spec(dekm_shared::ContractError),
    /// A weight tensor is absent.
    #[error("missing tensor {0}")]
    Missing(String),
    /// A weight tensor or an input has the wrong number of values.
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        /// Tensor name or buffer.
        what: String,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// A weight is NaN or infinite.
    #[error("tensor {name}: value at index {index} is not finite")]
    NotFinite {
        /// Tensor name.
        name: String,
        /// First offending index.
        index: usize,
    },
}

/// `y = W x + b` with `W` row-major `[out, in]` (PyTorch's layout).
#[derive(Debug, Clone)]
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    input: usize,
}

/// One convolution with its resolved shapes.
#[derive(Debug, Clone)]
struct Conv {
    g: ConvGeometry,
    /// The weight transposed to `[in·k·k, out]`, so a tile's weights for one reduction step
    /// are contiguous.
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    /// For every element of the column matrix, the input index it copies, or the input length
    /// (a zero slot just past the input) inside the padding. Computed once per model, so
    /// `im2col` is one branch-free gather instead of per-element bounds arithmetic.
    gather: Vec<u32>,
}

#[derive(Debug, Clone)]
enum Body {
    Conv(Vec<Conv>),
    Dense(Vec<Dense>),
}

/// The exported encoder, ready to run.
#[derive(Debug, Clone)]
pub struct Encoder {
    spec: EncoderSpec,
    body: Body,
    latent: Dense,
    /// Lengths of the activation buffers and of the column matrix.
    sizes: (usize, usize),
}

/// Scratch buffers for one [`Encoder`]: two activation buffers and one column matrix.
#[derive(Debug, Clone)]
pub struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
    cols: Vec<f32>,
}

fn tensor<'a>(
    get: &impl Fn(&str) -> Option<&'a [f32]>,
    name: &str,
    len: usize,
) -> Result<Vec<f32>, EncoderError> {
    let t = get(name).ok_or_else(|| EncoderError::Missing(name.into()))?;
    if t.len() != len {
        return Err(EncoderError::Length {
            what: name.into(),
            expected: len,
            got: t.len(),
        });
    }
    if let Some(index) = t.iter().position(|x| !x.is_finite()) {
        return Err(EncoderError::NotFinite {
            name: name.into(),
            index,
        });
    }
    Ok(t.to_vec())
}

fn dense<'a>(
    get: &impl Fn(&str) -> Option<&'a [f32]>,
    name: &str,
    input: usize,
    output: usize,
) -> Result<Dense, EncoderError> {
    Ok(Dense {
        weight: tensor(get, &format!("{name}.weight"), output * input)?,
        bias: tensor(get, &format!("{name}.bias"), output)?,
        input,
    })
}

impl Dense {
    fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `out = W x + b`, then ReLU when `relu`.
    fn forward(&self, x: &[f32], out: &mut [f32], relu: bool) {
        let out = &mut out[..self.outputs()];
        out.copy_from_slice(&self.bias);
        // Column-major view of the row-major [out, in] weight is its [in, out] transpose.
        let w = DMatrixView::from_slice(&self.weight, self.input, self.outputs());
        let x = DMatrixView::from_slice(&x[..self.input], 1, self.input);
        let mut y = DMatrixViewMut::from_slice(out, 1, self.outputs());
        y.gemm(1.0, &x, &w, 1.0);
        if relu {
            relu_in_place(out);
        }
    }
}

impl Conv {
    /// Rows and columns of the column matrix of one image.
    fn cols_shape(&self) -> (usize, usize) {
        let g = &self.g;
        (
            g.input.channels * g.kernel * g.kernel,
            g.output.height * g.output.width,
        )
    }

    /// Row length of the stored column matrix: `oh·ow` rounded up to whole vectors, the extra
    /// columns gathering zeros, so the kernel never handles a partial vector.
    fn padded_len(&self) -> usize {
        self.cols_shape().1.next_multiple_of(PAD_L)
    }

    /// The gather map of [`Conv::gather`] for geometry `g`, rows padded to whole vectors.
    fn gather_map(g: &ConvGeometry) -> Vec<u32> {
        let (ih, iw, oh, ow, k) = (
            g.input.height,
            g.input.width,
            g.output.height,
            g.output.width,
            g.kernel,
        );
        let zero = g.input.len() as u32;
        let rows = g.input.channels * k * k;
        let lp = (oh * ow).next_multiple_of(PAD_L);
        let mut map = Vec::with_capacity(rows * lp);
        for r in 0..rows {
            let (ci, ki, kj) = (r / (k * k), r / k % k, r % k);
            for oy in 0..oh {
                let iy = (oy * g.stride + ki).checked_sub(g.pad).filter(|&i| i < ih);
                for ox in 0..ow {
                    let ix = (ox * g.stride + kj).checked_sub(g.pad).filter(|&i| i < iw);
                    map.push(match (iy, ix) {
                        (Some(y), Some(x)) => ((ci * ih + y) * iw + x) as u32,
                        _ => zero,
                    });
                }
            }
            map.resize((r + 1) * lp, zero);
        }
        map
    }

    /// `out[o, oh·ow] = relu(W · cols + b)`.
    fn forward(&self, x: &mut [f32], cols: &mut [f32], out: &mut [f32]) {
        let (r, l) = self.cols_shape();
        let lp = self.padded_len();
        let o = self.g.output.channels;
        let cols = &mut cols[..r * lp];
        // `x` has one spare slot past the input, zeroed here, that the padding reads.
        let x = &mut x[..=self.g.input.len()];
        x[self.g.input.len()] = 0.0;
        for (c, &i) in cols.iter_mut().zip(&self.gather) {
            *c = x[i as usize];
        }
        let out = &mut out[..o * l];
        for (row, &b) in out.chunks_exact_mut(l).zip(&self.bias) {
            row.fill(b);
        }
        pulp::Arch::new().dispatch(TiledProduct {
            wt: &self.weight_t,
            cols,
            out,
            dims: (o, l, lp),
        });
        relu_in_place(out);
    }
}

/// Output rows per register tile: 8 accumulator vectors plus the column vector and a broadcast
/// fit the 16 registers of AVX2 as well as the 32 of AVX-512.
const TILE_O: usize = 8;
/// Column matrices are padded to a multiple of this (the widest vector, AVX-512's 16 lanes),
/// so every tile is whole for any vector width.
const PAD_L: usize = 16;

/// `out[O, L] += wt[R, O]ᵀ · cols[R, Lp]` with explicit SIMD: `TILE_O` output rows by one
/// vector of columns per register tile, one broadcast-FMA per row and reduction step. It
/// allocates nothing (general GEMM libraries allocate packing buffers on every call), and
/// `pulp` runs it with the widest vectors the CPU has (AVX-512, AVX2+FMA, NEON).
struct TiledProduct<'a> {
    wt: &'a [f32],
    cols: &'a [f32],
    out: &'a mut [f32],
    /// (O, L, padded L).
    dims: (usize, usize, usize),
}

impl pulp::WithSimd for TiledProduct<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Self {
            wt,
            cols,
            out,
            dims,
        } = self;
        let (o, l, lp) = dims;
        let lanes = S::F32_LANES;
        if lanes > PAD_L {
            // No instruction set pulp knows has more than 16 f32 lanes; should one appear, stay
            // correct with plain loops rather than read past the padded rows.
            for (i, orow) in out.chunks_exact_mut(l).enumerate().take(o) {
                for (wrow, crow) in wt.chunks_exact(o).zip(cols.chunks_exact(lp)) {
                    for (d, &c) in orow.iter_mut().zip(crow) {
                        *d += wrow[i] * c;
                    }
                }
            }
            return;
        }
        // AVX-512 has 32 vector registers: 16 accumulators halve the passes over the columns.
        let wide = lanes >= 16;
        for l0 in (0..l).step_by(lanes) {
            let lw = lanes.min(l - l0);
            let mut o0 = 0;
            while wide && o0 + 2 * TILE_O <= o {
                block::<S, { 2 * TILE_O }>(simd, wt, cols, out, (o0, l0, lw), dims);
                o0 += 2 * TILE_O;
            }
            while o0 + TILE_O <= o {
                block::<S, TILE_O>(simd, wt, cols, out, (o0, l0, lw), dims);
                o0 += TILE_O;
            }
            while o0 < o {
                block::<S, 1>(simd, wt, cols, out, (o0, l0, lw), dims);
                o0 += 1;
            }
        }
    }
}

/// One register tile: `ROWS` output rows from `o0` by one vector of columns from `l0` (`lw` of
/// them real). `ROWS` is a constant so the accumulators live in registers.
#[inline(always)]
fn block<S: pulp::Simd, const ROWS: usize>(
    simd: S,
    wt: &[f32],
    cols: &[f32],
    out: &mut [f32],
    (o0, l0, lw): (usize, usize, usize),
    (o, l, lp): (usize, usize, usize),
) {
    let lanes = S::F32_LANES;
    let mut acc = [simd.splat_f32s(0.0); ROWS];
    for (wrow, crow) in wt.chunks_exact(o).zip(cols.chunks_exact(lp)) {
        let (c, _) = S::as_simd_f32s(&crow[l0..l0 + lanes]);
        let (Some(&c), Ok(w)) = (c.first(), <&[f32; ROWS]>::try_from(&wrow[o0..o0 + ROWS])) else {
            return;
        };
        for (a, &w) in acc.iter_mut().zip(w) {
            *a = simd.mul_add_e_f32s(simd.splat_f32s(w), c, *a);
        }
    }
    let mut spill = [0f32; PAD_L];
    for (i, a) in acc.iter().enumerate() {
        let (v, _) = S::as_mut_simd_f32s(&mut spill[..lanes]);
        if let Some(slot) = v.first_mut() {
            *slot = *a;
        }
        for (d, x) in out[(o0 + i) * l + l0..][..lw].iter_mut().zip(&spill) {
            *d += x;
        }
    }
}

fn relu_in_place(xs: &mut [f32]) {
    for v in xs {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
}

impl Encoder {
    /// Builds the encoder of `spec` from the tensors `get` returns by export name
    /// (`encoder.conv0.weight`, ...), checking every length and that every value is finite.
    pub fn new<'a>(
        spec: &EncoderSpec,
        get: impl Fn(&str) -> Option<&'a [f32]>,
    ) -> Result<Self, EncoderError> {
        spec.validate().map_err(EncoderError::Spec)?;
        let pre = spec.pre_latent_len().map_err(EncoderError::Spec)?;
        let body = match spec {
            EncoderSpec::Conv { .. } => Body::Conv(
                spec.conv_geometry()
                    .map_err(EncoderError::Spec)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, g)| {
                        let name = names::conv(i);
                        let r = g.input.channels * g.kernel * g.kernel;
                        let o = g.output.channels;
                        let w = tensor(&get, &format!("{name}.weight"), o * r)?;
                        Ok(Conv {
                            weight_t: (0..r * o).map(|i| w[(i % o) * r + i / o]).collect(),
                            bias: tensor(&get, &format!("{name}.bias"), g.output.channels)?,
                            gather: Conv::gather_map(&g),
                            g,
                        })
                    })
                    .collect::<Result<_, EncoderError>>()?,
            ),
            EncoderSpec::Dense { input, hidden, .. } => {
                let mut prev = *input;
                let mut layers = Vec::with_capacity(hidden.len());
                for (i, &h) in hidden.iter().enumerate() {
                    layers.push(dense(&get, &names::dense(i), prev, h)?);
                    prev = h;
                }
                Body::Dense(layers)
            }
        };
        let latent = dense(&get, names::LATENT, pre, spec.latent_dim())?;
        // One spare slot for the zero that padded positions gather.
        let mut act = spec.input_len().max(pre) + 1;
        let mut cols = 0;
        match &body {
            Body::Conv(convs) => {
                for c in convs {
                    act = act.max(c.g.output.len() + 1);
                    cols = cols.max(c.cols_shape().0 * c.padded_len());
                }
            }
            Body::Dense(layers) => {
                for d in layers {
                    act = act.max(d.outputs());
                }
            }
        }
        Ok(Self {
            spec: spec.clone(),
            body,
            latent,
            sizes: (act, cols),
        })
    }

    /// The layer specification.
    pub fn spec(&self) -> &EncoderSpec {
        &self.spec
    }

    /// Values per (normalised) input sample.
    pub fn input_len(&self) -> usize {
        self.spec.input_len()
    }

    /// Latent dimension.
    pub fn latent_dim(&self) -> usize {
        self.latent.outputs()
    }

    /// Floating-point operations (two per multiply-add) of one forward pass, for reporting
    /// GFLOP/s against the machine's peak.
    pub fn flops_per_sample(&self) -> usize {
        let body: usize = match &self.body {
            Body::Conv(convs) => convs
                .iter()
                .map(|c| {
                    let (r, l) = c.cols_shape();
                    2 * r * l * c.g.output.channels
                })
                .sum(),
            Body::Dense(layers) => layers.iter().map(|d| 2 * d.input * d.outputs()).sum(),
        };
        body + 2 * self.latent.input * self.latent.outputs()
    }

    /// Buffers for [`Self::encode`], allocated once.
    pub fn workspace(&self) -> Workspace {
        let (act, cols) = self.sizes;
        Workspace {
            a: vec![0.0; act],
            b: vec![0.0; act],
            cols: vec![0.0; cols],
        }
    }

    /// Writes the latent vector of the normalised sample `x` into `z`.
    pub fn encode(&self, x: &[f32], ws: &mut Workspace, z: &mut [f32]) -> Result<(), EncoderError> {
        let length = |what: &str, expected: usize, got: usize| {
            (expected != got).then(|| EncoderError::Length {
                what: what.into(),
                expected,
                got,
            })
        };
        if let Some(e) = length("input sample", self.input_len(), x.len())
            .or_else(|| length("latent buffer", self.latent_dim(), z.len()))
        {
            return Err(e);
        }
        let (act, n) = self.sizes;
        if ws.a.len() < act || ws.b.len() < act || ws.cols.len() < n {
            // A workspace made for another encoder: replaced once, then reused.
            *ws = self.workspace();
        }
        let Workspace { a, b, cols } = ws;
        a[..x.len()].copy_from_slice(x);
        let (mut cur, mut next) = (a, b);
        match &self.body {
            Body::Conv(convs) => {
                for c in convs {
                    c.forward(cur, cols, next);
                    core::mem::swap(&mut cur, &mut next);
                }
            }
            Body::Dense(layers) => {
                for d in layers {
                    d.forward(cur, next, true);
                    core::mem::swap(&mut cur, &mut next);
                }
            }
        }
        self.latent.forward(cur, z, false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use dekm_shared::ImageShape;

    /// Deterministic pseudo-random weights for every tensor of `spec`.
    fn weights(spec: &EncoderSpec) -> BTreeMap<String, Vec<f32>> {
        let mut state = 12345u32;
        let mut next = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        names::expected_tensors(spec, 1, 1)
            .unwrap()
            .into_iter()
            .map(|t| {
                let n = t.shape.iter().product();
                (t.name, (0..n).map(|_| next() * 0.3).collect())
            })
            .collect()
    }

    /// Direct-loop reference in f64.
    fn reference(spec: &EncoderSpec, w: &BTreeMap<String, Vec<f32>>, x: &[f32]) -> Vec<f64> {
        let mut h: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        for (i, g) in spec.conv_geometry().unwrap().iter().enumerate() {
            let (wt, bs) = (
                &w[&format!("encoder.conv{i}.weight")],
                &w[&format!("encoder.conv{i}.bias")],
            );
            let (ci, ih, iw) = (g.input.channels, g.input.height, g.input.width);
            let (co, oh, ow, k) = (g.output.channels, g.output.height, g.output.width, g.kernel);
            let mut out = vec![0f64; co * oh * ow];
            for o in 0..co {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = f64::from(bs[o]);
                        for c in 0..ci {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy as usize >= ih || ix as usize >= iw {
                                        continue;
                                    }
                                    let xv = h[(c * ih + iy as usize) * iw + ix as usize];
                                    s += xv * f64::from(wt[((o * ci + c) * k + ki) * k + kj]);
                                }
                            }
                        }
                        out[(o * oh + oy) * ow + ox] = s.max(0.0);
                    }
                }
            }
            h = out;
        }
        if let EncoderSpec::Dense { hidden, .. } = spec {
            for i in 0..hidden.len() {
                h = affine(
                    &w[&format!("encoder.dense{i}.weight")],
                    &w[&format!("encoder.dense{i}.bias")],
                    &h,
                )
                .into_iter()
                .map(|v| v.max(0.0))
                .collect();
            }
        }
        affine(&w["encoder.latent.weight"], &w["encoder.latent.bias"], &h)
    }

    fn affine(w: &[f32], b: &[f32], x: &[f64]) -> Vec<f64> {
        b.iter()
            .zip(w.chunks_exact(x.len()))
            .map(|(&b, row)| {
                f64::from(b)
                    + row
                        .iter()
                        .zip(x)
                        .map(|(&w, &x)| f64::from(w) * x)
                        .sum::<f64>()
            })
            .collect()
    }

    fn check(spec: EncoderSpec) {
        let w = weights(&spec);
        let enc = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
        let mut ws = enc.workspace();
        let mut z = vec![0f32; enc.latent_dim()];
        for s in 0..3 {
            let x: Vec<f32> = (0..enc.input_len())
                .map(|i| ((i * 7 + s * 13) % 17) as f32 / 17.0)
                .collect();
            enc.encode(&x, &mut ws, &mut z).unwrap();
            let want = reference(&spec, &w, &x);
            for (a, b) in z.iter().zip(&want) {
                assert!(
                    (f64::from(*a) - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn paper_conv_encoder_matches_direct_loops() {
        let shape = ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        };
        check(EncoderSpec::paper_conv(shape, 10));
    }

    #[test]
    fn odd_multichannel_images_and_dense_encoders_match_direct_loops() {
        let shape = ImageShape {
            channels: 3,
            height: 13,
            width: 13,
        };
        check(EncoderSpec::paper_conv(shape, 4));
        check(EncoderSpec::Dense {
            input: 12,
            hidden: vec![9, 7],
            latent: 3,
        });
    }

    #[test]
    fn missing_or_mis_sized_weights_and_inputs_are_named() {
        let spec = EncoderSpec::paper_dense(6, 2);
        let mut w = weights(&spec);
        w.remove("encoder.latent.bias");
        let err = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap_err();
        assert_eq!(err, EncoderError::Missing("encoder.latent.bias".into()));
        let mut w = weights(&spec);
        w.get_mut("encoder.dense0.weight").unwrap().pop();
        let err = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap_err();
        assert!(
            matches!(err, EncoderError::Length { ref what, .. } if what == "encoder.dense0.weight")
        );
        let mut w = weights(&spec);
        w.get_mut("encoder.dense1.bias").unwrap()[3] = f32::NAN;
        let err = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap_err();
        assert!(matches!(err, EncoderError::NotFinite { index: 3, .. }));
        let w = weights(&spec);
        let enc = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
        let mut ws = enc.workspace();
        let err = enc.encode(&[0.0; 5], &mut ws, &mut [0.0; 2]).unwrap_err();
        assert!(matches!(
            err,
            EncoderError::Length {
                expected: 6,
                got: 5,
                ..
            }
        ));
    }
}
