//! What happens when the reader of stdout goes away (`dekm train ... | head -3`).
//!
//! Rust starts every program with `SIGPIPE` ignored, so a write to a closed pipe returns an
//! error, and `println!` turns that error into a panic: the command's work was done (the model
//! saved) but it ended with a panic message and status 101. Command-line tools instead end
//! quietly on `SIGPIPE`, as the shell expects. The gRPC server is the exception: a client that
//! hangs up must never end it, so it keeps the signal ignored.

/// Restores the default action of `SIGPIPE` (end the process, quietly) on Unix; elsewhere
/// nothing.
///
/// # Safety
/// Changes a process-wide signal disposition: call it first thing in `main`, before any thread
/// or socket exists.
#[allow(unsafe_code)]
pub unsafe fn end_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: `signal` with `SIG_DFL` installs no handler; the caller guarantees that no other
    // thread is running.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
