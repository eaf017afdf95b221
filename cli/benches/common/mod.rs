//! Helpers shared by the benchmark binaries.

/// Peak f32 FLOP/s of `cores` x86 cores: two FMA pipes per cycle, 256-bit on AVX2 machines
/// (8 lanes x 2 FLOP x 2 = 32) and 512-bit where AVX-512 is present (64; an upper bound, since
/// some AVX-512 cores split 512-bit operations into two halves); the clock is the one
/// `/proc/cpuinfo` reports (nominal on most VMs; turbo can exceed it). The instruction set is
/// the one this process sees (CPUID), so a run under `scripts/without-avx512.sh` counts AVX2's.
pub fn peak_gflops(cores: usize) -> Option<(f64, f64)> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    let (_, flop_per_cycle) = vector_isa();
    Some((mhz / 1000.0, cores as f64 * flop_per_cycle * mhz / 1000.0))
}

/// The widest f32 vector instructions this process may use, as its CPUID reports them, and
/// the f32 FLOP per cycle of two FMA pipes of that width.
pub fn vector_isa() -> (&'static str, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return ("AVX-512", 64.0);
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return ("AVX2 + FMA", 32.0);
        }
    }
    ("128-bit or scalar", 16.0)
}

/// The f32 multiply-add rate one core sustains right now, in GFLOP/s: 12 independent chains of
/// FMAs on the widest vectors the CPU has, best of 5 rounds of 8-16 ms. Unlike [`peak_gflops`]
/// it includes turbo clocks, so it is the ceiling to compare kernels with. On a shared machine
/// the clock wanders: call it beside each measurement and keep the highest (the edge bench
/// does), or a kernel can read above 100% of a probe taken in a slow moment.
///
/// Twelve chains: at least the 8 that two pipes of latency 4 keep busy, and with the two
/// constants 14 vector registers, within AVX2's 16. It used to be 16 chains, which spilled to
/// memory on AVX2 and measured 56 GFLOP/s on a Zen 3 core that sustains 99 (and that the edge
/// encoder itself beat, issue 35); AVX-512's 32 registers hid the spill.
pub fn measured_peak_gflops() -> f64 {
    (0..5)
        .map(|_| pulp::Arch::new().dispatch(FmaChains))
        .fold(0.0, f64::max)
}

struct FmaChains;

impl pulp::WithSimd for FmaChains {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> f64 {
        const ROUNDS: usize = 1 << 23;
        let (a, b) = (simd.splat_f32s(0.999_999), simd.splat_f32s(1e-7));
        let mut acc = [simd.splat_f32s(1.0); 12];
        let start = std::time::Instant::now();
        for _ in 0..ROUNDS {
            for x in &mut acc {
                *x = simd.mul_add_e_f32s(*x, a, b);
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        std::hint::black_box(acc);
        (ROUNDS * acc.len() * S::F32_LANES * 2) as f64 / seconds / 1e9
    }
}
