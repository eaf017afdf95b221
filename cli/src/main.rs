//! `dekm`: train, evaluate, cluster, plot, choose k, serve and import. This file only sets up
//! the process (allocator, threads, logs), parses the command line and dispatches to
//! `commands/`, one file per subcommand.

mod commands;

use anyhow::Result;
use clap::Parser;

use commands::Cli;

#[global_allocator]
static GLOBAL: dekm_cli::allocator::MiMalloc = dekm_cli::allocator::MiMalloc;

fn main() -> Result<()> {
    dekm_cli::allocator::keep_freed_memory();
    // SAFETY: first statement of `main` after the allocator option; no thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        dekm_cli::threads::one_candle_thread();
    }
    let cli = Cli::parse();
    if !cli.command.is_server() {
        // SAFETY: still before any thread or socket (parsing the command line starts none).
        #[allow(unsafe_code)]
        unsafe {
            dekm_cli::pipes::end_quietly_on_closed_stdout();
        }
    }
    // Progress bars carry the running figures; `RUST_LOG=info` adds structured logs. The
    // server logs at info by default, as JSON lines with --log-json.
    let (level, json) = cli.command.logging();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    cli.command.run(cli.quiet)
}
