//! The allocator the `dekm` binaries install, and how it is tuned for training.
//!
//! A training step allocates and frees the same few dozen megabyte-sized buffers (activations,
//! gradients) every batch. glibc's malloc hands such blocks back to the kernel at once; mimalloc
//! by default does so a while after they are freed (1 s in mimalloc v3, 10 ms in v2). Either way the next step page-faults them back
//! in and the kernel zeroes every page again: about 11,000 faults (each a 2 MiB huge page) in
//! 20 batches of the paper's autoencoder, up to 15% of the step. Keeping freed memory mapped costs
//! nothing but a resident set that stays at its peak, which is what a trainer reaches anyway.

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in `mimalloc.h` (the same number in mimalloc v2 and v3; v3 is what
/// libmimalloc-sys builds by default); the crate does not export the constant, and a test reads
/// the option's default at this number to check that it is still the purge delay.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The option's number is mimalloc's, not the crate's: reading its documented default (1000
    /// ms in mimalloc v3, the version libmimalloc-sys builds) at that number shows that the
    /// number names the purge delay in the mimalloc this build links, and not some other option
    /// that -1 would silently change.
    #[test]
    fn the_option_number_names_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("SKIPPED: MIMALLOC_PURGE_DELAY is set, so the default cannot be read");
            return;
        }
        // SAFETY: `mi_option_get` reads one integer from mimalloc's option table.
        #[allow(unsafe_code)]
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            delay, 1000,
            "option {MI_OPTION_PURGE_DELAY} is not the purge delay"
        );
    }
}
