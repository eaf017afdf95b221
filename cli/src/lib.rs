//! The `dekm` command line's library side: what the binary, its benchmarks and its analysis
//! example share. The subcommands themselves live in the binary (`src/commands/`, one file
//! each); here are the process set-up ([`allocator`], [`threads`], [`pipes`]), the progress bars
//! ([`progress`], an observer of the training library's runs), the pictures ([`plots`], and
//! [`timeline`] for a sensor stream) and
//! the clustering comparisons behind `cluster`, `evaluate` and `select-k` ([`analysis`]).

pub mod allocator;
pub mod analysis;
pub mod pipes;
pub mod plots;
pub mod progress;
pub mod threads;
pub mod timeline;
