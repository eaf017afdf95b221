//! The int8 layers' portable kernel: plain integer loops over i16 weight pairs that every CPU
//! runs (x86 compiles the pair multiply-add to `pmaddwd`; NEON and microcontrollers run them
//! too), with the sums of the VNNI kernels in [`super::vnni`].

use super::conv::PAD_C;
use super::int8::{GROUP, QLayer};

/// Every register tile of layer `l` (inlined into the int8 stack's dispatch, so the compiler
/// vectorises it for the CPU).
#[inline(always)]
pub(super) fn tiles(l: &QLayer, pairs: &[i16], x: &[u8], acc: &mut [i32]) {
    let vectors = l.out_stride / PAD_C;
    let mut v0 = 0;
    while v0 < vectors {
        let o0 = v0 * PAD_C;
        // Wide strips give CPUs with vectors independent sums to overlap; a microcontroller
        // gains nothing from them and keeps one strip width (a third of the code).
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        match vectors - v0 {
            4.. => {
                strip::<64>(l, pairs, x, acc, o0);
                v0 += 4;
                continue;
            }
            2 | 3 => {
                strip::<32>(l, pairs, x, acc, o0);
                v0 += 2;
                continue;
            }
            _ => {}
        }
        strip::<16>(l, pairs, x, acc, o0);
        v0 += 1;
    }
}

/// Output channels `o0..o0 + W` of every pixel, one pixel at a time: its `W` sums stay in
/// registers (4 AVX-512, 8 AVX2 or 16 NEON vectors) while the weight rows stream from L1 (with
/// a tile of several pixels, as the VNNI kernel has, the compiler spilled them).
#[inline(always)]
fn strip<const W: usize>(l: &QLayer, pairs: &[i16], x: &[u8], out: &mut [i32], o0: usize) {
    let (taps, groups, stride) = (l.taps, l.groups, l.out_stride);
    let row = groups * GROUP;
    for (p, offsets) in l.offsets.chunks_exact(taps).enumerate().take(l.pixels) {
        let mut acc = [0i32; W];
        for (t, &at) in offsets.iter().enumerate() {
            // The pixel's bytes for this tap, checked once rather than per group.
            let Some(src) = x.get(at as usize..at as usize + row) else {
                debug_assert!(false, "tap offset {at} past the activations");
                return;
            };
            for (g, s) in src.chunks_exact(GROUP).enumerate() {
                for k in 0..GROUP / 2 {
                    let at = (((t * groups + g) * 2 + k) * stride + o0) * 2;
                    let (a0, a1) = (i32::from(s[2 * k]), i32::from(s[2 * k + 1]));
                    // `x0·w0 + x1·w1` over i16 pairs: the pattern compilers turn into one
                    // pair multiply-add instruction (x86 `pmaddwd`).
                    for (acc, w) in acc.iter_mut().zip(pairs[at..at + 2 * W].chunks_exact(2)) {
                        *acc += a0 * i32::from(w[0]) + a1 * i32::from(w[1]);
                    }
                }
            }
        }
        out[p * stride + o0..][..W].copy_from_slice(&acc);
    }
}
