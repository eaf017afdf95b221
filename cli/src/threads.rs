//! How the trainer's binaries share the cores between candle's thread pool and rayon's.
//!
//! The convolutions and GEMMs run on rayon's pool. candle 0.11 runs large element-wise ops (among
//! them the zero-fill and addition through which its autograd accumulates every gradient) on a
//! second pool of its own, whose threads spin for 25,000 iterations after each op before they
//! park, on the same cores as rayon's workers. On the 2-core machine `perf` put 13% of a training
//! step in that spin, and the step took 5% longer than with candle's element-wise ops on the
//! calling thread alone: those ops are memory-bound and small next to the convolutions.

/// The environment variable candle reads, once, to size its element-wise pool.
const CANDLE_THREADS: &str = "CANDLE_NUM_THREADS";

/// Gives candle's element-wise ops one thread (the caller's) unless `CANDLE_NUM_THREADS` is
/// already set, which then wins.
///
/// # Safety
/// Changes the process environment: call it first thing in `main`, while no other thread
/// exists that could read the environment at the same time.
#[allow(unsafe_code)]
pub unsafe fn one_candle_thread() {
    if std::env::var_os(CANDLE_THREADS).is_none() {
        // SAFETY: the caller guarantees that no other thread is running.
        unsafe { std::env::set_var(CANDLE_THREADS, "1") }
    }
}
