//! The allocator the `dekm` binaries install, and how it is tuned for training.
//!
//! A training step allocates and frees the same few dozen megabyte-sized buffers (activations,
//! gradients) every batch. glibc's malloc hands such blocks back to the kernel at once; mimalloc
//! by default does so 10 ms after they are freed. Either way the next step page-faults them back
//! in and the kernel zeroes every page again: about 11,000 faults (each a 2 MiB huge page) in
//! 20 batches of the paper's autoencoder, up to 15% of the step. Keeping freed memory mapped costs
//! nothing but a resident set that stays at its peak, which is what a trainer reaches anyway.

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's `mimalloc.h` (the version libmimalloc-sys builds by
/// default); the crate does not export the constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed memory to the OS. Call first thing in `main`; without
/// mimalloc as the global allocator it has no effect.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` stores one integer in mimalloc's option table and may be called at
    // any time from any thread; -1 is the documented "never purge" value of this option.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}
