//! The layer's kernels, for each instruction set: the input tiles' transform, the product
//! points' register tiles, the sums' transform back, the activation.

use super::{MAX_ALPHA, MAX_M, OUTSIDE, Phase, Winograd, tile_outputs};
use crate::encoder::conv::{Activate, PAD_C, TILE_P, even_tiles, strip_vectors};

/// `$f::<S, AR, AC>(args)` with `phase`'s tile extents (products along its rows and columns)
/// as the constants `AR` and `AC`, so that a tile's values stay in registers.
macro_rules! with_extents {
    ($phase:expr, $f:ident::<$s:ty>($($arg:expr),*)) => {
        with_extents!(@arms $phase, $f, $s, ($($arg),*);
            (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4),
            (3, 1), (3, 2), (3, 3), (3, 4), (4, 1), (4, 2), (4, 3), (4, 4))
    };
    (@arms $phase:expr, $f:ident, $s:ty, $args:tt; $(($r:literal, $c:literal)),*) => {
        match ($phase.rows.alpha(), $phase.cols.alpha()) {
            $(($r, $c) => with_extents!(@call $f, $s, $r, $c, $args),)*
            _ => unreachable!("tiles are 1 to {MAX_ALPHA} values along an axis"),
        }
    };
    (@call $f:ident, $s:ty, $r:literal, $c:literal, ($($arg:expr),*)) => {
        $f::<$s, $r, $c>($($arg),*)
    };
}

/// [`Winograd::forward`] for one instruction set.
pub(super) struct Kernel<'a> {
    pub(super) layer: &'a Winograd,
    pub(super) x: &'a [f32],
    pub(super) scratch: &'a mut [f32],
    pub(super) out: &'a mut [f32],
}

impl pulp::WithSimd for Kernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Self {
            layer,
            x,
            scratch,
            out,
        } = self;
        if PAD_C.is_multiple_of(S::F32_LANES) {
            run(simd, layer, x, scratch, out);
        } else {
            run(pulp::Scalar::new(), layer, x, scratch, out);
        }
    }
}

/// The whole layer: outputs at the bias, each phase's tiles transformed and multiplied point
/// by point into them, then the activation.
#[inline(always)]
fn run<S: pulp::Simd>(simd: S, layer: &Winograd, x: &[f32], scratch: &mut [f32], out: &mut [f32]) {
    let stride = layer.out_stride;
    let out = &mut out[..layer.pixels() * stride];
    for px in out.chunks_exact_mut(stride) {
        px.copy_from_slice(&layer.bias);
    }
    let tiles = layer.tiles.0 * layer.tiles.1;
    let (up, mp) = layer.point_strides();
    let (u, m) = scratch.split_at_mut(layer.most_points() * up);
    for phase in &layer.phases {
        transform_inputs(simd, layer, phase, x, u);
        for point in 0..phase.points() {
            let rows = &u[point * up..][..tiles * layer.in_stride];
            let sums = &mut m[point * mp..][..tiles * stride];
            point_product(simd, layer, phase.point0 + point, rows, sums);
        }
        transform_outputs(simd, layer, phase, m, out);
    }
    let act = Activate::new(simd, layer.activation);
    let (head, tail) = S::as_mut_simd_f32s(out);
    for v in head {
        *v = act.apply(*v);
    }
    debug_assert!(tail.is_empty(), "outputs are padded to whole vectors");
}

/// Phase `phase`'s input tiles transformed, `u[point, tile, channel] = (Bᵀ d B)[point]` of
/// each tile `d`, a vector of channels at a time.
#[inline(always)]
fn transform_inputs<S: pulp::Simd>(
    simd: S,
    layer: &Winograd,
    phase: &Phase,
    x: &[f32],
    u: &mut [f32],
) {
    with_extents!(phase, transform_tiles::<S>(simd, layer, phase, x, u));
}

/// [`transform_inputs`] for tiles of `AR` by `AC` values.
#[inline(always)]
fn transform_tiles<S: pulp::Simd, const AR: usize, const AC: usize>(
    simd: S,
    layer: &Winograd,
    phase: &Phase,
    x: &[f32],
    u: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let tiles = layer.tiles.0 * layer.tiles.1;
    let (stride, point) = (layer.in_stride, layer.point_strides().0);
    let zero = simd.splat_f32s(0.0);
    let reads = &layer.reads[phase.read0..][..tiles * AR * AC];
    // The bounds of every vector read and written below, checked once (see `Vectors`).
    let x = Vectors::new(x, layer.ends.0);
    let mut u = VectorsMut::new(u, (AR * AC - 1) * point + tiles * stride);
    let (Some(x), Some(u)) = (x, u.as_mut()) else {
        debug_assert!(
            false,
            "a Winograd layer's reads or scratch are out of its buffers"
        );
        return;
    };
    for (t, reads) in reads.chunks_exact(AR * AC).enumerate() {
        for c0 in (0..stride).step_by(lanes) {
            // `Bᵀ d` down each column, then `· B` along each row.
            let mut d = [[zero; MAX_ALPHA]; MAX_ALPHA];
            for q in 0..AC {
                let mut column = [zero; MAX_ALPHA];
                for (p, v) in column.iter_mut().enumerate().take(AR) {
                    // SAFETY: `c0 + lanes <= stride`, and `x`'s end is the largest read
                    // plus `stride` (`Winograd::ends`).
                    #[allow(unsafe_code)]
                    let value = unsafe { x.load::<S>(reads[p * AC + q] as usize + c0) };
                    *v = value;
                }
                let column = bt(simd, AR, column);
                for (row, v) in d.iter_mut().zip(column).take(AR) {
                    row[q] = v;
                }
            }
            for (i, row) in d.into_iter().enumerate().take(AR) {
                let row = bt(simd, AC, row);
                for (j, v) in row.into_iter().enumerate().take(AC) {
                    // SAFETY: with `i * AC + j < AR * AC`, `t < tiles` and `c0 + lanes <=
                    // stride`, the vector ends within `u`'s end.
                    #[allow(unsafe_code)]
                    unsafe {
                        u.store::<S>((i * AC + j) * point + t * stride + c0, v)
                    };
                }
            }
        }
    }
}

/// `Bᵀ d` for the first `alpha` values of `d`: F(2, 3) for 4 values, F(2, 2) for 3, the
/// values themselves for F(2, 1) and F(1, 1); as [`Axis::new`]'s matrices, whose
/// coefficients are all 0 or ±1.
#[inline(always)]
pub(super) fn bt<S: pulp::Simd>(
    simd: S,
    alpha: usize,
    d: [S::f32s; MAX_ALPHA],
) -> [S::f32s; MAX_ALPHA] {
    let [d0, d1, d2, d3] = d;
    match alpha {
        4 => [
            simd.sub_f32s(d0, d2),
            simd.add_f32s(d1, d2),
            simd.sub_f32s(d2, d1),
            simd.sub_f32s(d1, d3),
        ],
        3 => [simd.sub_f32s(d0, d1), d1, simd.sub_f32s(d2, d1), d3],
        _ => d,
    }
}

/// Product point `point`: `rows` (`[tile, channel]`) times the point's weights into `sums`
/// (`[tile, output channel]`), strip by strip of output channels.
#[inline(always)]
fn point_product<S: pulp::Simd>(
    simd: S,
    layer: &Winograd,
    point: usize,
    rows: &[f32],
    sums: &mut [f32],
) {
    let (cin, stride) = (layer.g.input.channels, layer.out_stride);
    let product = Product {
        layer,
        rows,
        weight: &layer.weight[point * cin * stride..][..cin * stride],
    };
    let lanes = S::F32_LANES;
    let vectors = stride / lanes;
    let widest = strip_vectors::<S>();
    let tiles = layer.tiles.0 * layer.tiles.1;
    let mut v0 = 0;
    while v0 < vectors {
        let o0 = v0 * lanes;
        let nv = match (vectors - v0).min(widest) {
            4.. => 4,
            2 | 3 => 2,
            _ => 1,
        };
        for (t0, p) in even_tiles(tiles, TILE_P) {
            macro_rules! shapes {
                ($(($p:literal, $nv:literal)),*) => {
                    match (p.min(TILE_P), nv) {
                        $(($p, $nv) => product.tile::<S, $p, $nv>(simd, sums, t0, o0),)*
                        _ => unreachable!("tiles of 1 to {TILE_P} rows by 1, 2 or 4 vectors"),
                    }
                };
            }
            shapes!(
                (1, 1),
                (2, 1),
                (3, 1),
                (4, 1),
                (5, 1),
                (6, 1),
                (1, 2),
                (2, 2),
                (3, 2),
                (4, 2),
                (5, 2),
                (6, 2),
                (1, 4),
                (2, 4),
                (3, 4),
                (4, 4),
                (5, 4),
                (6, 4)
            );
        }
        v0 += nv;
    }
}

/// One product point's operands.
struct Product<'a> {
    layer: &'a Winograd,
    /// `[tile, channel]`, rows `in_stride` apart.
    rows: &'a [f32],
    /// `[channel, output channel]`.
    weight: &'a [f32],
}

impl Product<'_> {
    /// `P` tiles from `t0` by `NV` vectors of output channels from `o0`, into `sums`.
    #[inline(always)]
    fn tile<S: pulp::Simd, const P: usize, const NV: usize>(
        &self,
        simd: S,
        sums: &mut [f32],
        t0: usize,
        o0: usize,
    ) {
        let layer = self.layer;
        let (cin, stride) = (layer.g.input.channels, layer.out_stride);
        let width = NV * S::F32_LANES;
        let mut src = [&self.rows[..0]; P];
        for (m, s) in src.iter_mut().enumerate() {
            *s = &self.rows[layer.row_starts[t0 + m] as usize..][..cin];
        }
        let zero = simd.splat_f32s(0.0);
        let mut acc = [[zero; NV]; P];
        let weight = &self.weight[o0..];
        for c in 0..cin {
            let w = &weight[c * stride..][..width];
            let Ok(&w) = <&[S::f32s; NV]>::try_from(S::as_simd_f32s(w).0) else {
                debug_assert!(false, "weight row slice {o0}+{width} is not whole vectors");
                return;
            };
            for (a, s) in acc.iter_mut().zip(&src) {
                let b = simd.splat_f32s(s[c]);
                for (a, &w) in a.iter_mut().zip(&w) {
                    *a = simd.mul_add_e_f32s(b, w, *a);
                }
            }
        }
        for (m, a) in acc.iter().enumerate() {
            let dst = &mut sums[(t0 + m) * stride + o0..][..width];
            for (d, &a) in S::as_mut_simd_f32s(dst).0.iter_mut().zip(a.iter()) {
                *d = a;
            }
        }
    }
}

/// Phase `phase`'s products `sums` (`[point, tile, output channel]`) transformed back,
/// `Aᵀ m A` of each tile's points, and added to the output pixels each tile covers.
#[inline(always)]
fn transform_outputs<S: pulp::Simd>(
    simd: S,
    layer: &Winograd,
    phase: &Phase,
    sums: &[f32],
    out: &mut [f32],
) {
    with_extents!(phase, output_tiles::<S>(simd, layer, sums, out));
}

/// [`transform_outputs`] for tiles of `AR` by `AC` points.
#[inline(always)]
fn output_tiles<S: pulp::Simd, const AR: usize, const AC: usize>(
    simd: S,
    layer: &Winograd,
    sums: &[f32],
    out: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let tiles = layer.tiles.0 * layer.tiles.1;
    let (stride, point) = (layer.out_stride, layer.point_strides().1);
    let zero = simd.splat_f32s(0.0);
    let (mr, mc) = (tile_outputs(AR), tile_outputs(AC));
    debug_assert_eq!((mr, mc), layer.m);
    let sums = Vectors::new(sums, (AR * AC - 1) * point + tiles * stride);
    let mut out = VectorsMut::new(out, layer.ends.1);
    let (Some(sums), Some(out)) = (sums, out.as_mut()) else {
        debug_assert!(
            false,
            "a Winograd layer's sums or outputs are out of its buffers"
        );
        return;
    };
    for t in 0..tiles {
        let outputs = &layer.outputs[t * mr * mc..][..mr * mc];
        for c0 in (0..stride).step_by(lanes) {
            // `Aᵀ m` down each column, then `· A` along each row.
            let mut z = [[zero; MAX_ALPHA]; MAX_M];
            for q in 0..AC {
                let mut column = [zero; MAX_ALPHA];
                for (p, v) in column.iter_mut().enumerate().take(AR) {
                    // SAFETY: as the input transform's stores: `p * AC + q < AR * AC`,
                    // `t < tiles`, `c0 + lanes <= stride`.
                    #[allow(unsafe_code)]
                    let value = unsafe { sums.load::<S>((p * AC + q) * point + t * stride + c0) };
                    *v = value;
                }
                let column = at(simd, AR, column);
                for (row, v) in z.iter_mut().zip(column).take(mr) {
                    row[q] = v;
                }
            }
            for (a, row) in z.into_iter().enumerate().take(mr) {
                let row = at(simd, AC, row);
                for (b, v) in row.into_iter().enumerate().take(mc) {
                    let px = outputs[a * mc + b];
                    if px != OUTSIDE {
                        // SAFETY: `px` is one of the layer's output pixels (`out`'s end is
                        // the largest one's end, `Winograd::ends`) and `c0 + lanes <= stride`.
                        #[allow(unsafe_code)]
                        unsafe {
                            out.add::<S>(simd, px as usize * stride + c0, v)
                        };
                    }
                }
            }
        }
    }
}

/// `Aᵀ m` for the first `alpha` points of `m`: F(2, 3) for 4 points, F(2, 2) for 3,
/// F(2, 1) for 2, F(1, 1) for 1 (its one output first); as [`Axis::new`]'s matrices.
#[inline(always)]
pub(super) fn at<S: pulp::Simd>(
    simd: S,
    alpha: usize,
    m: [S::f32s; MAX_ALPHA],
) -> [S::f32s; MAX_M] {
    let [m0, m1, m2, m3] = m;
    match alpha {
        4 => [
            simd.add_f32s(simd.add_f32s(m0, m1), m2),
            simd.sub_f32s(simd.sub_f32s(m1, m2), m3),
        ],
        3 => [simd.add_f32s(m0, m1), simd.add_f32s(m1, m2)],
        _ => [m0, m1],
    }
}

/// A buffer read a vector at a time below a bound checked once, when made, for a whole loop
/// nest. The transforms' loads and stores sit at offsets computed from tables and strides
/// that the compiler cannot bound, so each `&x[at..][..lanes]` paid its compares and branches:
/// with AVX2 (eight vectors of channels per tile) that was 4.5 µs of MNIST's Winograd layer.
struct Vectors<'a> {
    values: &'a [f32],
    /// Every vector read ends at or before this.
    end: usize,
}

impl<'a> Vectors<'a> {
    /// `values` read below `end`, if `end` is within it.
    #[inline(always)]
    fn new(values: &'a [f32], end: usize) -> Option<Self> {
        (end <= values.len()).then_some(Self { values, end })
    }

    /// The vector of `S` at `at`.
    ///
    /// # Safety
    /// `at + S::F32_LANES` is at most the `end` that [`Self::new`] checked.
    #[inline(always)]
    #[allow(unsafe_code)]
    unsafe fn load<S: pulp::Simd>(&self, at: usize) -> S::f32s {
        debug_assert!(at + S::F32_LANES <= self.end);
        // SAFETY: the vector ends within `end`, within the slice (`new`); `S::f32s` is `Pod`
        // (any bits are a value of it) and read unaligned.
        unsafe {
            self.values
                .as_ptr()
                .add(at)
                .cast::<S::f32s>()
                .read_unaligned()
        }
    }
}

/// [`Vectors`] written, or added to.
struct VectorsMut<'a> {
    values: &'a mut [f32],
    end: usize,
}

impl<'a> VectorsMut<'a> {
    /// `values` written below `end`, if `end` is within it.
    #[inline(always)]
    fn new(values: &'a mut [f32], end: usize) -> Option<Self> {
        (end <= values.len()).then_some(Self { values, end })
    }

    /// Writes `v` at `at`.
    ///
    /// # Safety
    /// `at + S::F32_LANES` is at most the `end` that [`Self::new`] checked.
    #[inline(always)]
    #[allow(unsafe_code)]
    unsafe fn store<S: pulp::Simd>(&mut self, at: usize, v: S::f32s) {
        debug_assert!(at + S::F32_LANES <= self.end);
        // SAFETY: as in `Vectors::load`; `&mut self` is the only access to the slice.
        unsafe {
            self.values
                .as_mut_ptr()
                .add(at)
                .cast::<S::f32s>()
                .write_unaligned(v);
        }
    }

    /// Adds `v` to the vector at `at`.
    ///
    /// # Safety
    /// As [`Self::store`]'s.
    #[inline(always)]
    #[allow(unsafe_code)]
    unsafe fn add<S: pulp::Simd>(&mut self, simd: S, at: usize, v: S::f32s) {
        debug_assert!(at + S::F32_LANES <= self.end);
        // SAFETY: as in `Vectors::load`; `&mut self` is the only access to the slice.
        unsafe {
            let p = self.values.as_mut_ptr().add(at).cast::<S::f32s>();
            p.write_unaligned(simd.add_f32s(p.read_unaligned(), v));
        }
    }
}
