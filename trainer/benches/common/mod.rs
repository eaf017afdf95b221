//! Helpers shared by the benchmark binaries.

/// Peak f32 FLOP/s of `cores` x86 cores: two FMA pipes per cycle, 256-bit on AVX2 machines
/// (8 lanes x 2 FLOP x 2 = 32) and 512-bit where AVX-512 is present (64; an upper bound, since
/// some AVX-512 cores split 512-bit operations into two halves); the clock is the one
/// `/proc/cpuinfo` reports (nominal on most VMs; turbo can exceed it).
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
    let flop_per_cycle = if info.contains(" avx512f") {
        64.0
    } else if info.contains(" fma") {
        32.0
    } else {
        16.0
    };
    Some((mhz / 1000.0, cores as f64 * flop_per_cycle * mhz / 1000.0))
}
