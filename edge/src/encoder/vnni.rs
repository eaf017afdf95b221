//! The int8 layers' register tiles with VNNI: `vpdpbusd` multiplies the 4 unsigned activation
//! bytes of a group (broadcast to every lane) by 4 signed weight bytes in each lane and adds
//! the sums to i32 accumulators. Two widths from one body: AVX-512 VNNI (16 lanes, 64
//! multiply-adds an instruction; Ice Lake and later Xeons, Zen 4/5) and AVX-VNNI (8 lanes; Intel
//! cores from Alder Lake on and the Atom-class server cores, which have no AVX-512). Both read
//! the same `[tap, group, out_stride, 4]` bytes, and their sums are the portable kernel's in
//! [`super::int8`].

/// One VNNI kernel: `$lanes` i32 lanes of `$vec`, at most `$widest` vectors of output channels
/// per register tile (with 6 pixels: 24 accumulators of AVX-512's 32 registers, 12 of AVX2's
/// 16), compiled for `$features`.
macro_rules! vnni_kernel {
    ($kernel:ident, $doc:literal, $features:literal, $vec:ty, $lanes:literal, $widest:literal,
     $zero:ident, $splat:ident, $dot:ident) => {
        #[doc = $doc]
        pub(super) mod $kernel {
            use core::arch::x86_64::{$dot, $splat, $vec, $zero};

            use super::super::int8::{QLayer, tap_rows};

            /// Output pixels per register tile.
            const TILE_P: usize = 6;
            const LANES: usize = $lanes;
            /// Bytes in one vector of weights: `LANES` output channels × a group of 4.
            const VECTOR: usize = 4 * LANES;

            /// Every register tile of layer `l` over input bytes `x` into the sums `acc`.
            #[target_feature(enable = $features)]
            pub(in super::super) fn tiles(l: &QLayer, quads: &[i8], x: &[u8], acc: &mut [i32]) {
                let vectors = l.out_stride / LANES;
                let mut v0 = 0;
                while v0 < vectors {
                    let o0 = v0 * LANES;
                    match vectors - v0 {
                        4.. if $widest >= 4 => {
                            strip::<4>(l, quads, x, acc, o0);
                            v0 += 4;
                        }
                        2.. => {
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

            #[target_feature(enable = $features)]
            fn strip<const NV: usize>(
                l: &QLayer,
                quads: &[i8],
                x: &[u8],
                acc: &mut [i32],
                o0: usize,
            ) {
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

            /// `P` pixels from `p0` by `NV` vectors of output channels from `o0`,
            /// accumulators in registers.
            #[target_feature(enable = $features)]
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
                let mut acc = [[$zero(); NV]; P];
                let row = groups * 4;
                for t in 0..taps {
                    let Some(src) = tap_rows::<P>(x, offsets, (taps, t), row) else {
                        return;
                    };
                    let w_t = &quads[t * row * stride..][..row * stride];
                    for g in 0..groups {
                        let base = (g * stride + o0) * 4;
                        let mut w = [$zero(); NV];
                        for (v, w) in w.iter_mut().enumerate() {
                            *w = load(&w_t[base + v * VECTOR..]);
                        }
                        for (acc, s) in acc.iter_mut().zip(&src) {
                            let word = [s[4 * g], s[4 * g + 1], s[4 * g + 2], s[4 * g + 3]];
                            let a = $splat(i32::from_le_bytes(word));
                            for (s, &w) in acc.iter_mut().zip(&w) {
                                *s = $dot(*s, a, w);
                            }
                        }
                    }
                }
                for (m, acc) in acc.iter().enumerate() {
                    let dst = &mut out[(p0 + m) * stride + o0..][..NV * LANES];
                    for (d, &s) in dst.chunks_exact_mut(LANES).zip(acc) {
                        d.copy_from_slice(&pulp::cast::<$vec, [i32; LANES]>(s));
                    }
                }
            }

            /// The weight bytes of one vector at the start of `w` (the layout guarantees them).
            #[inline(always)]
            fn load(w: &[i8]) -> $vec {
                match w.first_chunk::<VECTOR>() {
                    Some(&bytes) => pulp::cast(bytes),
                    None => {
                        debug_assert!(false, "weight vector past the end");
                        pulp::cast([0i8; VECTOR])
                    }
                }
            }
        }
    };
}

vnni_kernel!(
    avx512,
    "AVX-512 VNNI: 16 lanes.",
    "avx512f,avx512bw,avx512vnni",
    __m512i,
    16,
    4,
    _mm512_setzero_si512,
    _mm512_set1_epi32,
    _mm512_dpbusd_epi32
);

vnni_kernel!(
    avx,
    "AVX-VNNI: 8 lanes of AVX2's registers.",
    "avx2,avxvnni",
    __m256i,
    8,
    2,
    _mm256_setzero_si256,
    _mm256_set1_epi32,
    _mm256_dpbusd_avx_epi32
);
