//! `dekm embed`: documents to sentence embeddings in a `.npy` file, the first half of the
//! text recipe on its own (for other tools, or to cluster the same vectors many ways).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use dekm_cli::progress::Count;
use dekm_embed::Embedder;

use super::args::DeviceArgs;

#[derive(Args)]
pub(crate) struct EmbedArgs {
    /// Documents: one per line, or a .csv/.tsv column or a .jsonl field (--text-col).
    #[arg(long)]
    input: PathBuf,
    /// A sentence-transformers model folder (scripts/fetch-minilm.sh unpacks
    /// all-MiniLM-L6-v2).
    #[arg(long, env = "DEKM_EMBEDDER")]
    embedder: PathBuf,
    /// The text column of a .csv/.tsv file (header name or index) or field of a .jsonl file
    /// (default: text).
    #[arg(long)]
    text_col: Option<String>,
    /// Texts per batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Output: `.npy` (float32, one row per text, in input order).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

pub(crate) fn run(args: &EmbedArgs) -> Result<()> {
    let texts = dekm_data::text::read_texts(&args.input, args.text_col.as_deref(), None)?;
    let embedder = Embedder::load(&args.embedder, &args.device.open()?)?;
    let started = Instant::now();
    let bar = Count::new("embedding", texts.texts.len());
    let e = embedder.embed(&texts.texts, args.batch as usize, &mut |n| bar.set(n))?;
    drop(bar);
    let seconds = started.elapsed().as_secs_f64();
    let n = texts.texts.len();
    let bytes = dekm_data::numpy::npy_f32(&e.xs, n, e.dim);
    std::fs::write(&args.out, bytes).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "embedded {n} texts with {} ({} values each) in {seconds:.2} s ({:.1} texts/s); {} \
         truncated to {} tokens",
        embedder.id().name,
        e.dim,
        n as f64 / seconds.max(1e-9),
        e.truncated.len(),
        embedder.folder().max_tokens
    );
    println!("wrote {}", args.out.display());
    Ok(())
}
