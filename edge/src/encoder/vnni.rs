//! The int8 layers' register tiles with AVX-512 VNNI: `vpdpbusd` multiplies the 4 unsigned
//! activation bytes of a group (broadcast to every lane) by 4 signed weight bytes in each of 16
//! lanes and adds the sums to 16 i32 accumulators, 64 multiply-adds an instruction. Tiles and
//! their order are those of the portable kernel in [`super::int8`], so both give the same sums.

use core::arch::x86_64::{__m512i, _mm512_dpbusd_epi32, _mm512_set1_epi32, _mm512_setzero_si512};

use super::conv::PAD_C;
use super::int8::QLayer;

/// Output pixels per register tile, as the f32 kernel: 6 × 4 accumulator vectors + 4 weight
/// vectors + 1 broadcast fit AVX-512's 32 registers.
const TILE_P: usize = 6;

/// Bytes in one vector of weights: 16 output channels × a group of 4.
const VECTOR: usize = 64;

/// Every register tile of layer `l` over input bytes `x` into the sums `acc`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) fn tiles(l: &QLayer, quads: &[i8], x: &[u8], acc: &mut [i32]) {
    let vectors = l.out_stride / PAD_C;
    let mut v0 = 0;
    while v0 < vectors {
        let o0 = v0 * PAD_C;
        match vectors - v0 {
            4.. => {
                strip::<4>(l, quads, x, acc, o0);
                v0 += 4;
            }
            2 | 3 => {
                strip::<2>(l, quads, x, acc, o0);
                v0 += 2;
            }
            _ => {
                strip::<1>(l, quads, x, acc, o0);
                v0 += 1;
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn strip<const NV: usize>(l: &QLayer, quads: &[i8], x: &[u8], acc: &mut [i32], o0: usize) {
    let mut p0 = 0;
    while p0 + TILE_P <= l.pixels {
        tile::<TILE_P, NV>(l, quads, x, acc, p0, o0);
        p0 += TILE_P;
    }
    match l.pixels - p0 {
        0 => {}
        1 => tile::<1, NV>(l, quads, x, acc, p0, o0),
        2 => tile::<2, NV>(l, quads, x, acc, p0, o0),
        3 => tile::<3, NV>(l, quads, x, acc, p0, o0),
        4 => tile::<4, NV>(l, quads, x, acc, p0, o0),
        _ => tile::<5, NV>(l, quads, x, acc, p0, o0),
    }
}

/// `P` pixels from `p0` by `NV` vectors of output channels from `o0`, accumulators in
/// registers.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn tile<const P: usize, const NV: usize>(
    l: &QLayer,
    quads: &[i8],
    x: &[u8],
    out: &mut [i32],
    p0: usize,
    o0: usize,
) {
    let (taps, groups, stride) = (l.taps, l.groups, l.out_stride);
    let offsets = &l.offsets[p0 * taps..(p0 + P) * taps];
    let mut acc = [[_mm512_setzero_si512(); NV]; P];
    let row = groups * 4;
    for t in 0..taps {
        // Each pixel's bytes for this tap, checked once here rather than per group.
        let mut src = [&x[..0]; P];
        for (m, s) in src.iter_mut().enumerate() {
            let at = offsets[m * taps + t] as usize;
            let Some(bytes) = x.get(at..at + row) else {
                debug_assert!(false, "tap offset {at} past the activations");
                return;
            };
            *s = bytes;
        }
        let w_t = &quads[t * row * stride..][..row * stride];
        for g in 0..groups {
            let base = (g * stride + o0) * 4;
            let mut w = [_mm512_setzero_si512(); NV];
            for (v, w) in w.iter_mut().enumerate() {
                *w = load(&w_t[base + v * VECTOR..]);
            }
            for (acc, s) in acc.iter_mut().zip(&src) {
                let word = [s[4 * g], s[4 * g + 1], s[4 * g + 2], s[4 * g + 3]];
                let a = _mm512_set1_epi32(i32::from_le_bytes(word));
                for (s, &w) in acc.iter_mut().zip(&w) {
                    *s = _mm512_dpbusd_epi32(*s, a, w);
                }
            }
        }
    }
    for (m, acc) in acc.iter().enumerate() {
        let dst = &mut out[(p0 + m) * stride + o0..][..NV * PAD_C];
        for (d, &s) in dst.chunks_exact_mut(PAD_C).zip(acc) {
            d.copy_from_slice(&pulp::cast::<__m512i, [i32; PAD_C]>(s));
        }
    }
}

/// The 64 weight bytes at the start of `w` as one vector (the layout guarantees them).
#[inline(always)]
fn load(w: &[i8]) -> __m512i {
    match w.first_chunk::<VECTOR>() {
        Some(&bytes) => pulp::cast(bytes),
        None => {
            debug_assert!(false, "weight vector past the end");
            pulp::cast([0i8; VECTOR])
        }
    }
}
