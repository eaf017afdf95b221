//! Winograd's minimal filtering for the convolutions where an encoder spends its time.
//!
//! A direct convolution does one multiply-add per output, input channel and tap; at the FMA
//! unit's full rate that is a floor no direct kernel beats (DEKM's MNIST encoder on a Zen 4:
//! 57 µs, where dekm-edge ran at 95% of it). Winograd's F(2, 3) makes two outputs of a 3-tap
//! correlation from four products instead of six, so the same layer needs fewer multiply-adds.
//!
//! A strided layer is first split into stride-1 layers, one per phase of the stride: with
//! stride 2 a 5x5 kernel becomes kernels of 3x3, 3x2, 2x3 and 2x2 taps reading the sub-images
//! of even or odd rows and columns, whose sums add up to the layer's. Each runs F(2, r) along
//! every axis whose output is wider than one pixel (F(1, 1) along an axis one output wide: a
//! 1-D layer's single row). MNIST's second layer (5x5, 32 → 64 channels, 14x14 → 7x7): 16
//! tiles of 2x2 outputs × 49 products = 784 multiply-adds per channel pair, against 49 pixels
//! × 25 taps = 1,225 (0.64x).
//!
//! Per phase, the input tiles are transformed (`Bᵀ d B`: additions only) into one matrix per
//! product point, `[tile, input channel]`; each point is then a small matrix product with that
//! point's transformed weights (`G g Gᵀ`, `[input channel, output channel]`, computed once in
//! f64) into a matrix of sums, run by register tiles shaped as the direct convolution's; the
//! sums are transformed back (`Aᵀ m A`, additions only) and added to the output pixels, which
//! start at the bias; the activation runs once at the end. The sums are rounded in another
//! order than the direct ones (the transforms add inputs before multiplying), so the outputs
//! agree with the direct convolution's to a few units in the last place, not bit for bit.
//!
//! Used where it was measured to pay (docs/RESULTS.md, "Winograd's algorithm in the edge
//! encoder"): on x86-64 with AVX2 or AVX-512, for layers with at least [`MIN_CHANNELS`] input
//! channels, tiled along both axes, whose products are at most 3/4 of their direct
//! multiply-adds and whose transformed weights fit [`MAX_WEIGHT_BYTES`]. MNIST's second layer
//! then runs in 0.86-0.92x the direct time (the whole encoder 0.87-0.89x with AVX-512,
//! 0.89-0.97x with AVX2, on an AMD Zen 4). Alone, ClusterGAN's second layer (4x4, 64 → 128)
//! also ran faster (0.86-0.89x), but not inside its encoder (see [`MAX_WEIGHT_BYTES`]); a 1-D
//! layer (the sensor encoder's second, 0.73x the multiply-adds, tiles of two outputs) was no
//! faster, and with AVX2 slower. NEON (not measured) and microcontrollers keep the direct
//! convolution: the module is not even built there (on a microcontroller the transformed
//! weights' extra memory, 2x for a 5x5 kernel, would count too).

use alloc::vec::Vec;

use dekm_shared::{Activation, ConvGeometry};

use super::Aligned;
use super::conv::{PAD_C, simd_shape};
use kernels::Kernel;

mod kernels;
#[cfg(test)]
mod tests;

/// Layers with fewer input channels keep the direct convolution: each point's product then
/// reduces over too few values to pay for its register tiles' set-up and stores.
const MIN_CHANNELS: usize = 16;
/// The vector width (f32 lanes) from which the plan takes Winograd's algorithm: AVX2's.
const MIN_LANES: usize = 8;
/// Transformed weights larger than this keep the direct convolution: they are read whole for
/// every sample, and where they do not stay in the core's cache between samples the extra
/// bytes cost more than the products save. ClusterGAN's second layer (1.2 MB transformed
/// against 0.5 MB, next to a 25.7 MB dense layer that sweeps the cache each sample) ran its
/// encoder 3-6% slower with them; MNIST's (401 KB) stays.
const MAX_WEIGHT_BYTES: usize = 512 << 10;
/// Products per axis at most (F(2, 3)).
const MAX_ALPHA: usize = 4;
/// Output pixels per tile along an axis at most.
const MAX_M: usize = 2;
/// Floats between one product point's matrix and the next beyond its size: a cache line, so
/// that the points of one tile, written and read together, do not fall into one L1 set (16
/// tiles by 64 channels are 4 KiB: every point's row at the same offset of a page, 16 lines
/// competing for the 8 ways of a set, which cost MNIST's layer a fifth of its time).
const SKEW: usize = 16;
/// Marks a tile's output past the layer's edge.
const OUTSIDE: u32 = u32::MAX;

/// One axis's algorithm F(m, r): `m` outputs of an `r`-tap correlation `y[o] = Σ_a d[o + a] ·
/// g[a]` from `α = m + r − 1` products, `y = Aᵀ ((G g) ⊙ (Bᵀ d))`. `G` transforms the weights
/// once, in f64; `Bᵀ` and `Aᵀ`, whose coefficients are 0 or ±1, are written out as additions
/// in [`bt`] and [`at`], chosen by `α` alone (see [`phases`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    m: usize,
    r: usize,
    /// `G[i][a]`: product point `i`'s weight from tap `a`.
    g: [[f64; 3]; MAX_ALPHA],
}

impl Axis {
    /// F(2, r) for `r` of 1 to 3 (F(2, 1): two products of one tap), and F(1, 1); `None`
    /// otherwise.
    fn new(m: usize, r: usize) -> Option<Self> {
        let g = match (m, r) {
            (1, 1) => [[1.0, 0.0, 0.0], [0.0; 3], [0.0; 3], [0.0; 3]],
            (2, 1) => [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0; 3], [0.0; 3]],
            // Points 0, 1, ∞: m₀ = (d₀ − d₁) g₀, m₁ = d₁ (g₀ + g₁), m₂ = (d₂ − d₁) g₁.
            (2, 2) => [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0; 3]],
            // Lavin and Gray's F(2, 3): points 0, 1, −1, ∞.
            (2, 3) => [
                [1.0, 0.0, 0.0],
                [0.5, 0.5, 0.5],
                [0.5, -0.5, 0.5],
                [0.0, 0.0, 1.0],
            ],
            _ => return None,
        };
        Some(Self { m, r, g })
    }

    /// Products (and input values) per tile.
    fn alpha(&self) -> usize {
        self.m + self.r - 1
    }
}

/// One axis of a layer split by the phases of its stride: `(offset, F(m, taps))` for each
/// phase with taps (a kernel of `k` taps with stride `s` has `⌈(k − p)/s⌉` in phase `p`), with
/// `m` of 2 where the output is wider than one pixel, else 1 (a 1-D layer's single row, whose
/// phases must then have one tap each). `None` where a phase has more than 3 taps, or an
/// output one pixel wide more than one: nothing to save there. So an axis's tile size follows
/// from its product count (1 product: 1 output; 2 to 4: 2), which the kernels rely on.
fn phases(k: usize, s: usize, out: usize) -> Option<Vec<(usize, Axis)>> {
    let m = if out > 1 { 2 } else { 1 };
    (0..s.min(k))
        .map(|p| Some((p, Axis::new(m, (k - p).div_ceil(s))?)))
        .collect()
}

/// Output pixels per tile along an axis of `alpha` products (see [`phases`]).
const fn tile_outputs(alpha: usize) -> usize {
    if alpha == 1 { 1 } else { MAX_M }
}

/// A layer split by the phases of its stride, before any weight is transformed: enough to
/// tell whether Winograd's algorithm pays.
struct Split {
    rows: Vec<(usize, Axis)>,
    cols: Vec<(usize, Axis)>,
    /// Output pixels per tile along rows and columns.
    m: (usize, usize),
    /// Tiles along rows and columns.
    tiles: (usize, usize),
}

impl Split {
    /// `None` where [`phases`] cannot split an axis.
    fn new(g: &ConvGeometry) -> Option<Self> {
        let (oh, ow) = (g.output.height, g.output.width);
        let rows = phases(g.kernel.height, g.stride, oh)?;
        let cols = phases(g.kernel.width, g.stride, ow)?;
        let m = (rows[0].1.m, cols[0].1.m);
        Some(Self {
            tiles: (oh.div_ceil(m.0), ow.div_ceil(m.1)),
            rows,
            cols,
            m,
        })
    }

    /// Product points of all phases together.
    fn points(&self) -> usize {
        let alphas = |axis: &[(usize, Axis)]| axis.iter().map(|(_, a)| a.alpha()).sum::<usize>();
        alphas(&self.rows) * alphas(&self.cols)
    }
}

/// One phase of the stride along both axes.
#[derive(Debug, Clone, Copy)]
struct Phase {
    rows: Axis,
    cols: Axis,
    /// Its first product point among the layer's.
    point0: usize,
    /// Its first entry in [`Winograd::reads`].
    read0: usize,
}

impl Phase {
    fn points(&self) -> usize {
        self.rows.alpha() * self.cols.alpha()
    }
}

/// A convolution run by Winograd's algorithm (see the module's notes).
#[derive(Debug, Clone)]
pub(super) struct Winograd {
    pub(super) g: ConvGeometry,
    /// Output channels padded to [`PAD_C`], as the direct convolution's.
    pub(super) out_stride: usize,
    /// The input activations' channel stride, and the row length of the transformed tiles.
    in_stride: usize,
    /// Output pixels per tile along rows and columns.
    m: (usize, usize),
    /// Tiles along rows and columns.
    tiles: (usize, usize),
    phases: Vec<Phase>,
    /// `[point, input channel, output channel]` (output channels padded to `out_stride`), the
    /// phases' points one after the other.
    weight: Aligned<f32>,
    /// `[phase, tile, row, column]`: the offset of each tile's input values in the activations
    /// (of the first channel), or of the zero block where they fall into the padding.
    reads: Vec<u32>,
    /// `[tile, row, column]`: the output pixel of each of a tile's outputs, or [`OUTSIDE`].
    outputs: Vec<u32>,
    /// Where the last vector read through `reads` and written through `outputs` end: the
    /// bounds the transforms check their buffers against once (see `kernels::Vectors`).
    ends: (usize, usize),
    /// Where each tile's row of a point's transformed inputs starts (`tile · in_stride`).
    /// Read from memory, the register tiles' rows are opaque to the compiler, which then keeps
    /// a pointer per row, as the direct convolution's tap offsets do; computed as evenly
    /// spaced, it folded them into one pointer stepped row by row and rebuilt it every
    /// channel (seven integer operations per step, a fifth of the AVX2 tile's issue slots).
    row_starts: Vec<u32>,
    /// Bias padded with zeros, the outputs' starting value.
    bias: Vec<f32>,
    activation: Activation,
}

impl Winograd {
    /// Geometry `g` with the exported `[out, in, kh, kw]` weight `w` and bias `b` run by
    /// Winograd's algorithm, if that pays here (see the module's notes); reading activations
    /// whose channel stride is `in_stride`, with the zero block at `zero` (at least
    /// `in_stride` zeros long).
    pub(super) fn plan(
        g: ConvGeometry,
        (w, b): (&[f32], &[f32]),
        activation: Activation,
        (in_stride, zero): (usize, u32),
    ) -> Option<Self> {
        let (lanes, _) = simd_shape();
        if lanes < MIN_LANES || g.input.channels < MIN_CHANNELS {
            return None;
        }
        let split = Split::new(&g)?;
        let (cin, out_stride) = (g.input.channels, g.output.channels.next_multiple_of(PAD_C));
        let weight_bytes = split.points() * cin * out_stride * size_of::<f32>();
        let products = split.tiles.0 * split.tiles.1 * split.points();
        let direct = g.output.height * g.output.width * g.kernel.area();
        let pays = split.m == (MAX_M, MAX_M)
            && 4 * products <= 3 * direct
            && weight_bytes <= MAX_WEIGHT_BYTES;
        pays.then(|| Self::new(g, split, (w, b), activation, (in_stride, zero)))
    }

    /// Geometry `g`, split as `split`, run by Winograd's algorithm whether or not it pays.
    fn new(
        g: ConvGeometry,
        split: Split,
        (w, b): (&[f32], &[f32]),
        activation: Activation,
        (in_stride, zero): (usize, u32),
    ) -> Self {
        let Split {
            rows,
            cols,
            m,
            tiles,
        } = split;
        let (oh, ow) = (g.output.height, g.output.width);
        let (cin, cout) = (g.input.channels, g.output.channels);
        let out_stride = cout.next_multiple_of(PAD_C);
        let mut phase_list = Vec::with_capacity(rows.len() * cols.len());
        let (mut point0, mut read0) = (0, 0);
        for &(_, r) in &rows {
            for &(_, c) in &cols {
                let phase = Phase {
                    rows: r,
                    cols: c,
                    point0,
                    read0,
                };
                point0 += phase.points();
                read0 += phase.points() * tiles.0 * tiles.1;
                phase_list.push(phase);
            }
        }
        let mut layer = Self {
            g,
            out_stride,
            in_stride,
            m,
            tiles,
            phases: phase_list,
            weight: Aligned::new(point0 * cin * out_stride),
            reads: Vec::with_capacity(read0),
            outputs: Vec::with_capacity(tiles.0 * tiles.1 * m.0 * m.1),
            ends: (0, 0),
            row_starts: (0..tiles.0 * tiles.1)
                .map(|t| (t * in_stride) as u32)
                .collect(),
            bias: b.to_vec(),
            activation,
        };
        layer.bias.resize(out_stride, 0.0);
        let mut at = 0;
        for &(pr, r) in &rows {
            for &(pc, c) in &cols {
                layer.transform_weights(w, (pr, r), (pc, c), &mut at);
                layer.add_reads((pr, r), (pc, c), zero);
            }
        }
        for ty in 0..tiles.0 {
            for tx in 0..tiles.1 {
                for a in 0..m.0 {
                    for b in 0..m.1 {
                        let (y, x) = (ty * m.0 + a, tx * m.1 + b);
                        layer.outputs.push(if y < oh && x < ow {
                            (y * ow + x) as u32
                        } else {
                            OUTSIDE
                        });
                    }
                }
            }
        }
        let end = |offsets: &[u32], stride| {
            let inside = offsets.iter().filter(|&&v| v != OUTSIDE);
            inside.map(|&v| v as usize * stride + stride).max()
        };
        layer.ends = (
            // A read is an offset in the activations, an output a pixel.
            end(&layer.reads, 1).map_or(0, |e| e - 1 + in_stride),
            end(&layer.outputs, out_stride).unwrap_or(0),
        );
        layer
    }

    /// Appends phase `(pr, pc)`'s transformed weights `G g Gᵀ` at `*at`, where `g` are the
    /// taps `(pr + s·a, pc + s·b)` of each filter.
    fn transform_weights(
        &mut self,
        w: &[f32],
        (pr, rows): (usize, Axis),
        (pc, cols): (usize, Axis),
        at: &mut usize,
    ) {
        let (s, k) = (self.g.stride, self.g.kernel);
        let (cin, stride) = (self.g.input.channels, self.out_stride);
        for i in 0..rows.alpha() {
            for j in 0..cols.alpha() {
                for (o, filter) in w.chunks_exact(cin * k.area()).enumerate() {
                    for (c, taps) in filter.chunks_exact(k.area()).enumerate() {
                        let mut v = 0.0f64;
                        for a in 0..rows.r {
                            for b in 0..cols.r {
                                let tap = taps[(pr + s * a) * k.width + pc + s * b];
                                v += rows.g[i][a] * f64::from(tap) * cols.g[j][b];
                            }
                        }
                        self.weight[*at + c * stride + o] = v as f32;
                    }
                }
                *at += cin * stride;
            }
        }
    }

    /// Appends phase `(pr, pc)`'s reads: tile `(ty, tx)`'s value `(p, q)` is the input pixel
    /// `((m·ty + p)·s + pr − pad, (m·tx + q)·s + pc − pad)`.
    fn add_reads(&mut self, (pr, rows): (usize, Axis), (pc, cols): (usize, Axis), zero: u32) {
        let (s, pad) = (self.g.stride, self.g.pad);
        let (ih, iw) = (self.g.input.height, self.g.input.width);
        let at = |t: usize, m: usize, p: usize, phase: usize, pad: usize, len: usize| {
            ((m * t + p) * s + phase)
                .checked_sub(pad)
                .filter(|&i| i < len)
        };
        for ty in 0..self.tiles.0 {
            for tx in 0..self.tiles.1 {
                for p in 0..rows.alpha() {
                    for q in 0..cols.alpha() {
                        let y = at(ty, self.m.0, p, pr, pad.height, ih);
                        let x = at(tx, self.m.1, q, pc, pad.width, iw);
                        self.reads.push(match (y, x) {
                            (Some(y), Some(x)) => ((y * iw + x) * self.in_stride) as u32,
                            _ => zero,
                        });
                    }
                }
            }
        }
    }

    /// Multiply-adds per pair of input and output channels: tiles × product points.
    pub(super) fn products(&self) -> usize {
        let points: usize = self.phases.iter().map(Phase::points).sum();
        self.tiles.0 * self.tiles.1 * points
    }

    pub(super) fn pixels(&self) -> usize {
        self.g.output.height * self.g.output.width
    }

    /// Product points of the phase with the most.
    fn most_points(&self) -> usize {
        self.phases.iter().map(Phase::points).max().unwrap_or(0)
    }

    /// Values from one product point's matrix to the next in the transformed tiles and in
    /// the products ([`SKEW`] says why not just their size).
    fn point_strides(&self) -> (usize, usize) {
        let tiles = self.tiles.0 * self.tiles.1;
        (
            tiles * self.in_stride + SKEW,
            tiles * self.out_stride + SKEW,
        )
    }

    /// Values of scratch the layer needs: one phase's transformed tiles, then its products.
    pub(super) fn scratch_len(&self) -> usize {
        let (u, m) = self.point_strides();
        self.most_points() * (u + m)
    }

    /// The layer's output `out[pixel, channel]` (padded channels, as the direct convolution
    /// writes them) from the activations `x`; `scratch` holds at least
    /// [`Self::scratch_len`] values.
    pub(super) fn forward(&self, x: &[f32], scratch: &mut [f32], out: &mut [f32]) {
        pulp::Arch::new().dispatch(Kernel {
            layer: self,
            x,
            scratch,
            out,
        });
    }
}
