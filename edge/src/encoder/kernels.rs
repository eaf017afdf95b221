//! Which code sums an int8 layer's bytes: the kernels and how a CPU is matched to one
//! ([`Int8Kernel`]), the weights laid out for each ([`Packed`]: the kernel is the layout), and
//! the call into them. The kernels themselves are `portable`, `avx2`, `vnni` and `sdot`.

use alloc::{vec, vec::Vec};

use super::Aligned;
use super::int8::{GROUP, QLayer};

/// Which code sums the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// Plain integer loops over i16 weight pairs (vectorised by the compiler for the CPU's
    /// widest instruction set; every CPU runs them).
    Portable,
    /// AVX2 `vpmaddwd` on i16 pairs of the bytes (x86 cores with AVX2 but no VNNI: AMD Zen 2/3,
    /// Intel Haswell to Comet Lake).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-VNNI `vpdpbusd` on 8 lanes (Intel cores from Alder Lake on, and the Atom-class
    /// server cores, without AVX-512).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// AVX-512 VNNI `vpdpbusd` on 16 lanes.
    #[cfg(target_arch = "x86_64")]
    Vnni512,
    /// Armv8.2 dot product `sdot` on NEON's 4 lanes (Cortex-A55/A76 and later: the Raspberry
    /// Pi 5; not the Pi 4's A72).
    #[cfg(target_arch = "aarch64")]
    NeonDot,
}

impl Int8Kernel {
    /// Every kernel, slowest first.
    pub const ALL: &'static [Self] = &[
        Self::Portable,
        #[cfg(target_arch = "x86_64")]
        Self::Avx2,
        #[cfg(target_arch = "x86_64")]
        Self::AvxVnni,
        #[cfg(target_arch = "x86_64")]
        Self::Vnni512,
        #[cfg(target_arch = "aarch64")]
        Self::NeonDot,
    ];

    /// Whether this CPU has the instructions the kernel needs (at run time with `std`; without
    /// it, AVX-VNNI and the Arm dot product only when the build targets them).
    pub fn runs_here(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                #[cfg(feature = "std")]
                let found = std::is_x86_feature_detected!("avx2");
                #[cfg(not(feature = "std"))]
                let found = cfg!(target_feature = "avx2");
                found
            }
            #[cfg(target_arch = "x86_64")]
            Self::AvxVnni => {
                #[cfg(feature = "std")]
                let found = std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("avxvnni");
                #[cfg(not(feature = "std"))]
                let found = cfg!(all(target_feature = "avx2", target_feature = "avxvnni"));
                found
            }
            #[cfg(target_arch = "x86_64")]
            Self::Vnni512 => {
                pulp::x86::V4::is_available() && pulp::core_arch::x86::Avx512vnni::is_available()
            }
            #[cfg(target_arch = "aarch64")]
            Self::NeonDot => {
                #[cfg(feature = "std")]
                let found = std::arch::is_aarch64_feature_detected!("dotprod");
                #[cfg(not(feature = "std"))]
                let found = cfg!(target_feature = "dotprod");
                found
            }
        }
    }

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        Self::ALL
            .iter()
            .rev()
            .copied()
            .find(|k| k.runs_here())
            .unwrap_or(Self::Portable)
    }

    /// Its name, for benchmarks and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable integer loops",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => "AVX2 pair multiply-adds",
            #[cfg(target_arch = "x86_64")]
            Self::AvxVnni => "AVX-VNNI",
            #[cfg(target_arch = "x86_64")]
            Self::Vnni512 => "AVX-512 VNNI",
            #[cfg(target_arch = "aarch64")]
            Self::NeonDot => "NEON dot product (sdot)",
        }
    }

    /// Its short name on command lines: `portable`, `avx2`, `avx-vnni`, `avx512-vnni`,
    /// `neon-dotprod`.
    pub fn id(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Self::AvxVnni => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            Self::Vnni512 => "avx512-vnni",
            #[cfg(target_arch = "aarch64")]
            Self::NeonDot => "neon-dotprod",
        }
    }

    /// The kernel whose [`Self::id`] is `id`.
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.id() == id)
    }
}

/// A layer's weights as its kernel reads them: the kernel is the layout, so a layer cannot be
/// run by a kernel its weights were not laid out for, and a byte layout is only made for a
/// kernel that [`Int8Kernel::runs_here`].
#[derive(Debug, Clone)]
pub(super) enum Packed {
    /// `[tap, group, out_stride, 4]` bytes: one group's weights for 4, 8 or 16 outputs are one
    /// vector, as `vpdpbusd` and `sdot` read them.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    Quads(Int8Kernel, Aligned<i8>),
    /// `[tap, group, pair, out_stride, 2]` widened to i16: for each pair of input channels, a
    /// row of (w[2k], w[2k + 1]) over the outputs, the layout of a pair multiply-add (x86
    /// `pmaddwd`, Arm's `smlad` on a Cortex-M4/M7, NEON's widening multiply-adds). Twice the
    /// bytes of the int8 weights, half those of f32.
    Portable(Aligned<i16>),
    /// `[tap, group, half, out_stride, 2]` widened to i16: (w0, w2) then (w1, w3) of each
    /// group, the pairs [`super::avx2`] forms from a broadcast word of activation bytes.
    #[cfg(target_arch = "x86_64")]
    SplitPairs(Aligned<i16>),
}

impl Packed {
    /// `quads` (the `[tap, group, out_stride, 4]` bytes) packed for `kernel`, which must run
    /// on this CPU.
    pub(super) fn new(kernel: Int8Kernel, quads: Vec<i8>, out_stride: usize) -> Self {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Vnni512 | Int8Kernel::AvxVnni => Self::Quads(kernel, quads.into()),
            #[cfg(target_arch = "aarch64")]
            Int8Kernel::NeonDot => Self::Quads(kernel, quads.into()),
            Int8Kernel::Portable => Self::Portable(widen(&quads, out_stride, PAIRS).into()),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => Self::SplitPairs(widen(&quads, out_stride, SPLIT_PAIRS).into()),
        }
    }

    /// The `[tap, group, out_stride, 4]` bytes again.
    fn into_quads(self, out_stride: usize) -> Vec<i8> {
        match self {
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Self::Quads(_, quads) => quads.to_vec(),
            Self::Portable(pairs) => narrow(&pairs, out_stride, PAIRS),
            #[cfg(target_arch = "x86_64")]
            Self::SplitPairs(pairs) => narrow(&pairs, out_stride, SPLIT_PAIRS),
        }
    }

    /// The same weights for `kernel` (which runs on this CPU).
    pub(super) fn repack(self, kernel: Int8Kernel, out_stride: usize) -> Self {
        Self::new(kernel, self.into_quads(out_stride), out_stride)
    }

    /// The i32 sums `acc[pixel · out_stride + o] = Σ_tap Σ_c w_q · x_q` of layer `l` over input
    /// bytes `x`, by the kernel these weights were laid out for.
    #[inline(always)]
    pub(super) fn sums(&self, l: &QLayer, x: &[u8], acc: &mut [i32]) {
        match self {
            Self::Portable(pairs) => super::portable::tiles(l, pairs, x, acc),
            // SAFETY: `SplitPairs` is only made for `Int8Kernel::Avx2`, and only on a CPU where
            // it `runs_here` (`Int8Stack::new` packs for `detect()`, `with_kernel` checks): one
            // with AVX2.
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            Self::SplitPairs(pairs) => unsafe { super::avx2::tiles(l, pairs, x, acc) },
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Self::Quads(kernel, quads) => byte_tiles(*kernel, l, quads, x, acc),
        }
    }

    /// What the kernel subtracts from every activation byte before multiplying: 128 for
    /// `sdot`, which multiplies signed bytes (see [`super::sdot`]), 0 for the others.
    pub(super) fn activation_offset(&self) -> i32 {
        match self {
            #[cfg(target_arch = "aarch64")]
            Self::Quads(Int8Kernel::NeonDot, _) => 128,
            _ => 0,
        }
    }
}

/// Where [`widen`] puts byte `b` of a group as `(half, place)`: [`Packed::Portable`]'s
/// `(w0, w1), (w2, w3)`.
const PAIRS: [(usize, usize); GROUP] = [(0, 0), (0, 1), (1, 0), (1, 1)];
/// [`Packed::SplitPairs`]' `(w0, w2), (w1, w3)`.
#[cfg(target_arch = "x86_64")]
const SPLIT_PAIRS: [(usize, usize); GROUP] = [(0, 0), (1, 0), (0, 1), (1, 1)];

/// `quads` (`[tap, group, out_stride, 4]` bytes) widened to i16 pairs `[tap, group, half,
/// out_stride, 2]`, byte `b` of each output's quad going to `(half, place) = to[b]`.
fn widen(quads: &[i8], out_stride: usize, to: [(usize, usize); GROUP]) -> Vec<i16> {
    let mut pairs = vec![0i16; quads.len()];
    for (q, p) in quads
        .chunks_exact(out_stride * GROUP)
        .zip(pairs.chunks_exact_mut(out_stride * GROUP))
    {
        for (o, q) in q.chunks_exact(GROUP).enumerate() {
            for (&v, &(half, place)) in q.iter().zip(&to) {
                p[(half * out_stride + o) * 2 + place] = i16::from(v);
            }
        }
    }
    pairs
}

/// [`widen`] undone. The values came from bytes, so they fit one.
fn narrow(pairs: &[i16], out_stride: usize, to: [(usize, usize); GROUP]) -> Vec<i8> {
    let mut quads = vec![0i8; pairs.len()];
    for (p, q) in pairs
        .chunks_exact(out_stride * GROUP)
        .zip(quads.chunks_exact_mut(out_stride * GROUP))
    {
        for (o, q) in q.chunks_exact_mut(GROUP).enumerate() {
            for (v, &(half, place)) in q.iter_mut().zip(&to) {
                *v = p[(half * out_stride + o) * 2 + place] as i8;
            }
        }
    }
    quads
}

/// The byte-dot-product tiles of `kernel`: `vpdpbusd` ([`super::vnni`]) or `sdot`
/// ([`super::sdot`]).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[allow(unsafe_code)]
fn byte_tiles(kernel: Int8Kernel, l: &QLayer, quads: &[i8], x: &[u8], acc: &mut [i32]) {
    match kernel {
        // SAFETY: `Packed::Quads` is only made for a kernel that `Int8Kernel::runs_here`
        // confirmed (`Int8Stack::new` packs for `detect()`, `with_kernel` checks), i.e. on a
        // CPU that reports the features each `tiles` is compiled for.
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Vnni512 => unsafe { super::vnni::avx512::tiles(l, quads, x, acc) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::AvxVnni => unsafe { super::vnni::avx::tiles(l, quads, x, acc) },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Int8Kernel::NeonDot => unsafe { super::sdot::tiles(l, quads, x, acc) },
        Int8Kernel::Portable => debug_assert!(false, "portable weights are not in a byte layout"),
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => debug_assert!(false, "AVX2 weights are not in a byte layout"),
    }
}
