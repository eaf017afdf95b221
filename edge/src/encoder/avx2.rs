//! The int8 layers' register tiles for AVX2 without VNNI (AMD Zen 2/3, Intel Haswell to Comet
//! Lake): `vpmaddwd` multiplies i16 pairs and adds each pair into an i32 lane, 16 multiply-adds
//! an instruction against an f32 FMA's 8, but it needs a separate add into the accumulator.
//!
//! A group's four activation bytes are broadcast as one 32-bit word; masking keeps bytes 0 and
//! 2 as the i16 pair `(x0, x2)`, a 16-bit shift leaves `(x1, x3)`: both exact, as the bytes are
//! unsigned. The weights are stored widened to match (`[tap, group, half, out_stride, 2]`:
//! `(w0, w2)` then `(w1, w3)` for each output channel), so nothing is widened in the loop, and
//! the sums are the portable kernel's, exactly. (`vpmaddubsw` would multiply the bytes as they
//! are, but saturates its i16 pair sums, 255 · 127 · 2 > 32,767, and so is not exact.)

use core::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_madd_epi16, _mm256_set1_epi32,
    _mm256_setzero_si256, _mm256_srli_epi16,
};

use super::conv::even_tiles;
use super::int8::{QLayer, tap_rows};

/// Output pixels per register tile: 3 pixels × 2 vectors = 6 accumulators, 2 × 2 weight
/// vectors, the byte mask, the broadcast word, its half and a product: 14 of AVX2's 16
/// registers. (With 4 pixels the compiler kept two accumulators on the stack, at the same
/// speed: the tile is bound by its multiply-adds and adds, not by reloading weights from L1.)
const TILE_P: usize = 3;
/// i32 lanes of a vector.
const LANES: usize = 8;
/// i16 values in one vector of weights: `LANES` output channels × a pair.
const VECTOR: usize = 2 * LANES;

/// Every register tile of layer `l` over input bytes `x` into the sums `acc`; `pairs` in the
/// layout above.
#[target_feature(enable = "avx2")]
pub(super) fn tiles(l: &QLayer, pairs: &[i16], x: &[u8], acc: &mut [i32]) {
    let vectors = l.out_stride / LANES;
    let mut v0 = 0;
    while v0 < vectors {
        let o0 = v0 * LANES;
        if vectors - v0 >= 2 {
            strip::<2>(l, pairs, x, acc, o0);
            v0 += 2;
        } else {
            strip::<1>(l, pairs, x, acc, o0);
            v0 += 1;
        }
    }
}

/// All pixels for `NV` vectors of output channels from `o0`, in tiles as even as possible.
#[target_feature(enable = "avx2")]
fn strip<const NV: usize>(l: &QLayer, pairs: &[i16], x: &[u8], acc: &mut [i32], o0: usize) {
    for (p0, p) in even_tiles(l.pixels, TILE_P) {
        match p {
            3.. => tile::<TILE_P, NV>(l, pairs, x, acc, p0, o0),
            2 => tile::<2, NV>(l, pairs, x, acc, p0, o0),
            _ => tile::<1, NV>(l, pairs, x, acc, p0, o0),
        }
    }
}

/// `P` pixels from `p0` by `NV` vectors of output channels from `o0`, accumulators in
/// registers.
#[target_feature(enable = "avx2")]
#[inline]
fn tile<const P: usize, const NV: usize>(
    l: &QLayer,
    pairs: &[i16],
    x: &[u8],
    out: &mut [i32],
    p0: usize,
    o0: usize,
) {
    let (taps, groups, stride) = (l.taps, l.groups, l.out_stride);
    let offsets = &l.offsets[p0 * taps..(p0 + P) * taps];
    let low_bytes = _mm256_set1_epi32(0x00ff_00ff);
    let mut acc = [[_mm256_setzero_si256(); NV]; P];
    let row = groups * 4;
    for (t, w_t) in pairs.chunks_exact(row * stride).take(taps).enumerate() {
        let Some(src) = tap_rows::<P>(x, offsets, (taps, t), row) else {
            return;
        };
        // Each pixel's row as 4-byte words: one load (and one check) per group.
        let words = src.map(|s| s.as_chunks::<4>().0);
        for (g, w_g) in w_t.chunks_exact(4 * stride).enumerate() {
            let (Some(w02), Some(w13)) = (
                vectors::<NV>(&w_g[o0 * 2..]),
                vectors::<NV>(&w_g[(stride + o0) * 2..]),
            ) else {
                return;
            };
            for (acc, words) in acc.iter_mut().zip(&words) {
                let Some(&word) = words.get(g) else {
                    debug_assert!(false, "group {g} past the tap's row");
                    return;
                };
                // Both halves of one pixel's word before the next pixel's: the broadcast dies
                // at once, where a loop over the halves outside kept every pixel's alive.
                let b = _mm256_set1_epi32(i32::from_le_bytes(word));
                let x02 = _mm256_and_si256(b, low_bytes);
                for (s, &w) in acc.iter_mut().zip(&w02) {
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(x02, w));
                }
                let x13 = _mm256_srli_epi16::<8>(b);
                for (s, &w) in acc.iter_mut().zip(&w13) {
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(x13, w));
                }
            }
        }
    }
    for (m, acc) in acc.iter().enumerate() {
        let dst = &mut out[(p0 + m) * stride + o0..][..NV * LANES];
        for (d, &s) in dst.chunks_exact_mut(LANES).zip(acc) {
            d.copy_from_slice(&pulp::cast::<__m256i, [i32; LANES]>(s));
        }
    }
}

/// The `NV` weight vectors at the start of `w`; `None` (a bug in the layout, caught by a debug
/// assertion) when they run past its end.
#[inline(always)]
fn vectors<const NV: usize>(w: &[i16]) -> Option<[__m256i; NV]> {
    let (chunks, _) = w.as_chunks::<VECTOR>();
    let Some(chunks) = chunks.first_chunk::<NV>() else {
        debug_assert!(false, "weight vectors past the end");
        return None;
    };
    Some(chunks.map(pulp::cast::<[i16; VECTOR], __m256i>))
}
