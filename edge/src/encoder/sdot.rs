//! The int8 layers' register tiles on 64-bit Arm with the dot-product extension (Armv8.2
//! `dotprod`: Cortex-A55, A76 and later, so the Raspberry Pi 5, Apple and Graviton cores; not
//! the Pi 4's Cortex-A72, which runs the portable loops). `sdot` by element multiplies, in each
//! of 4 i32 lanes, 4 weight bytes (one group of one output channel: the `[tap, group,
//! out_stride, 4]` layout of [`super::vnni`], 16 bytes for 4 channels) by the 4 activation
//! bytes of one group, picked from a register of 4 groups by the instruction's index: 16
//! multiply-adds per instruction, 4 for an f32 FMA on the same 128-bit vector.
//!
//! `sdot` multiplies signed bytes, and the activations are unsigned (`q ∈ 0..=255` with a zero
//! point). The tiles read each as `q − 128` (its top bit flipped) and so sum `Σ w (q − 128)`;
//! the layer's epilogue subtracts `(zp − 128) · Σ w` instead of `zp · Σ w`
//! ([`super::kernels::Packed::activation_offset`]), which gives the same integer `Σ w (q − zp)`
//! as every other kernel, so the latents stay bit-identical. (`usdot`, unsigned × signed,
//! needs Armv8.6's i8mm, which the A76 lacks.)
//!
//! The instruction is inline assembly: Rust's `vdotq_laneq_s32` is not stable yet
//! (rust-lang/rust#117224).

use core::arch::aarch64::{
    int8x16_t, int32x4_t, vdupq_n_s8, vdupq_n_s32, vdupq_n_u8, veorq_u8, vld1q_s8, vld1q_u8,
    vreinterpretq_s8_u8, vst1q_s32,
};
use core::arch::asm;

use super::int8::{GROUP, QLayer, tap_rows};

/// Output pixels per register tile: 4 pixels × 4 vectors = 16 accumulators, with 4 weight and
/// 4 activation registers, of NEON's 32.
const TILE_P: usize = 4;
/// Vectors of 4 output channels per tile: 16 channels, [`super::conv::PAD_C`], so every
/// padded layer is whole tiles wide.
const NV: usize = 4;
const LANES: usize = 4;
/// Bytes in one vector of weights: `LANES` output channels × a group of 4.
const VECTOR: usize = GROUP * LANES;
/// Groups of input bytes in one activation register.
const GROUPS_PER_LOAD: usize = 16 / GROUP;

/// Every register tile of layer `l` over input bytes `x` into the sums `acc` (of `q − 128`).
#[target_feature(enable = "neon,dotprod")]
pub(super) fn tiles(l: &QLayer, quads: &[i8], x: &[u8], acc: &mut [i32]) {
    debug_assert_eq!(
        l.out_stride % (NV * LANES),
        0,
        "outputs padded to whole tiles"
    );
    for o0 in (0..l.out_stride).step_by(NV * LANES) {
        let mut p0 = 0;
        while p0 + TILE_P <= l.pixels {
            tile::<TILE_P>(l, quads, x, acc, p0, o0);
            p0 += TILE_P;
        }
        match l.pixels - p0 {
            0 => {}
            1 => tile::<1>(l, quads, x, acc, p0, o0),
            2 => tile::<2>(l, quads, x, acc, p0, o0),
            _ => tile::<3>(l, quads, x, acc, p0, o0),
        }
    }
}

/// `P` pixels from `p0` by the 16 output channels from `o0`, accumulators in registers.
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn tile<const P: usize>(l: &QLayer, quads: &[i8], x: &[u8], out: &mut [i32], p0: usize, o0: usize) {
    let (taps, groups, stride) = (l.taps, l.groups, l.out_stride);
    let offsets = &l.offsets[p0 * taps..(p0 + P) * taps];
    let mut acc = [[vdupq_n_s32(0); NV]; P];
    let row = groups * GROUP;
    for t in 0..taps {
        let Some(src) = tap_rows::<P>(x, offsets, (taps, t), row) else {
            return;
        };
        let w_t = &quads[t * row * stride..][..row * stride];
        let weights = |g: usize| load_weights(w_t.get((g * stride + o0) * GROUP..));
        let mut g0 = 0;
        while g0 + GROUPS_PER_LOAD <= groups {
            let a: [int8x16_t; P] = core::array::from_fn(|m| signed(&src[m][g0 * GROUP..]));
            step::<P, 0>(&mut acc, &weights(g0), &a);
            step::<P, 1>(&mut acc, &weights(g0 + 1), &a);
            step::<P, 2>(&mut acc, &weights(g0 + 2), &a);
            step::<P, 3>(&mut acc, &weights(g0 + 3), &a);
            g0 += GROUPS_PER_LOAD;
        }
        if g0 < groups {
            // The last 1-3 groups: their bytes at the front of a register, the rest unused.
            let a: [int8x16_t; P] = core::array::from_fn(|m| signed(&src[m][g0 * GROUP..]));
            step::<P, 0>(&mut acc, &weights(g0), &a);
            if g0 + 1 < groups {
                step::<P, 1>(&mut acc, &weights(g0 + 1), &a);
            }
            if g0 + 2 < groups {
                step::<P, 2>(&mut acc, &weights(g0 + 2), &a);
            }
        }
    }
    for (m, acc) in acc.iter().enumerate() {
        let dst = &mut out[(p0 + m) * stride + o0..][..NV * LANES];
        for (d, &s) in dst.chunks_exact_mut(LANES).zip(acc) {
            store(d, s);
        }
    }
}

/// One group (`LANE` of the activation registers) into every accumulator of the tile.
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn step<const P: usize, const LANE: usize>(
    acc: &mut [[int32x4_t; NV]; P],
    w: &[int8x16_t; NV],
    a: &[int8x16_t; P],
) {
    for (acc, &a) in acc.iter_mut().zip(a) {
        for (s, &w) in acc.iter_mut().zip(w) {
            *s = sdot::<LANE>(*s, w, a);
        }
    }
}

/// `acc[i] += Σ_j w[4i + j] · a[4 LANE + j]`: `sdot` by element.
#[target_feature(enable = "neon,dotprod")]
#[inline]
#[allow(unsafe_code)]
fn sdot<const LANE: usize>(mut acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` reads and writes registers only; this function is compiled with
    // `dotprod`, so the instruction exists wherever it may be called (`tiles` is only reached
    // through `Int8Kernel::NeonDot`, which `runs_here` checked). `LANE` is a constant, so the
    // match folds to one instruction.
    unsafe {
        match LANE {
            0 => {
                asm!("sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[0]", acc = inout(vreg) acc, w = in(vreg) w, a = in(vreg) a, options(pure, nomem, nostack))
            }
            1 => {
                asm!("sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[1]", acc = inout(vreg) acc, w = in(vreg) w, a = in(vreg) a, options(pure, nomem, nostack))
            }
            2 => {
                asm!("sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[2]", acc = inout(vreg) acc, w = in(vreg) w, a = in(vreg) a, options(pure, nomem, nostack))
            }
            _ => {
                asm!("sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[3]", acc = inout(vreg) acc, w = in(vreg) w, a = in(vreg) a, options(pure, nomem, nostack))
            }
        }
    }
    acc
}

/// Up to 16 activation bytes from the start of `bytes` as `q − 128` (the top bit flipped);
/// fewer than 16 (a layer's last groups) are copied into a zeroed register first.
#[target_feature(enable = "neon")]
#[inline]
#[allow(unsafe_code)]
fn signed(bytes: &[u8]) -> int8x16_t {
    let q = match bytes.first_chunk::<16>() {
        // SAFETY: the chunk is 16 readable bytes.
        Some(chunk) => unsafe { vld1q_u8(chunk.as_ptr()) },
        None => {
            let mut part = [0u8; 16];
            let n = bytes.len().min(16);
            part[..n].copy_from_slice(&bytes[..n]);
            // SAFETY: as above, from the local copy.
            unsafe { vld1q_u8(part.as_ptr()) }
        }
    };
    vreinterpretq_s8_u8(veorq_u8(q, vdupq_n_u8(0x80)))
}

/// The `NV` weight vectors of one group at the start of `w` (the layout guarantees them: one
/// bounds check for the four loads).
#[target_feature(enable = "neon")]
#[inline]
#[allow(unsafe_code)]
fn load_weights(w: Option<&[i8]>) -> [int8x16_t; NV] {
    let Some(bytes) = w.and_then(|w| w.first_chunk::<{ NV * VECTOR }>()) else {
        debug_assert!(false, "weight vectors past the end");
        return [vdupq_n_s8(0); NV];
    };
    // SAFETY: `bytes` is `NV · VECTOR` readable bytes, and vector `v` is `VECTOR` of them
    // from `v · VECTOR`.
    core::array::from_fn(|v| unsafe { vld1q_s8(bytes.as_ptr().add(v * VECTOR)) })
}

/// Four sums into `d` (4 values).
#[target_feature(enable = "neon")]
#[inline]
#[allow(unsafe_code)]
fn store(d: &mut [i32], s: int32x4_t) {
    if let Some(d) = d.first_chunk_mut::<LANES>() {
        // SAFETY: `d` is 4 writable i32s.
        unsafe { vst1q_s32(d.as_mut_ptr(), s) }
    }
}
