//! `dekm embed`: documents to sentence embeddings in a `.npy` file, the first half of the
//! text recipe on its own (for other tools, or to cluster the same vectors many ways).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use dekm_cli::progress::Count;

use super::args::{DeviceArgs, TextArgs};

#[derive(Args)]
pub(crate) struct EmbedArgs {
    /// Documents: one per line, or a .csv/.tsv column or a .jsonl field (--text-col).
    #[arg(long)]
    input: PathBuf,
    #[command(flatten)]
    text: TextArgs,
    /// Output: `.npy` (float32, one row per text, in input order).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

pub(crate) fn run(args: &EmbedArgs) -> Result<()> {
    let texts = dekm_data::text::read_texts(&args.input, args.text.text_col.as_deref(), None)?;
    let embedder = args
        .text
        .embedder(args.input.display(), &args.device.open()?)?;
    let started = Instant::now();
    let bar = Count::new("embedding", texts.texts.len());
    let e = embedder.embed(&texts.texts, args.text.embed_batch as usize, &mut |n| {
        bar.set(n)
    })?;
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
