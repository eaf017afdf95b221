//! `dekm evaluate`: assign a data set with an exported model and judge the assignment.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dekm_cli::analysis;
use dekm_trainer::export::read_model;
use dekm_trainer::pipeline::{assign_latent, cluster_sizes};

use super::args::{DataArgs, DeviceArgs, PairArgs};

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// Model directory (or model.safetensors).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    pairs: PairArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Assigns the data with the model and prints cluster sizes, outliers and every metric.
pub(crate) fn run(args: &EvalArgs) -> Result<()> {
    let model = read_model(&args.model)?;
    let dev = args.device.open()?;
    let ds = args
        .data
        .load(model.meta.k, model.meta.seed, || Ok(dev.clone()))?;
    // One embedding pass serves both the assignment and the metrics in the latent space.
    let space = analysis::space(Some(&model), &ds, &dev)?;
    let out = assign_latent(&model, &space.xs)?;
    let labels: Vec<u32> = out.iter().map(|a| a.cluster).collect();
    let outliers = out.iter().filter(|a| a.outlier).count();
    println!(
        "{} samples of {} with the model trained on {} (k = {})",
        ds.len(),
        ds.name,
        model.meta.dataset,
        model.meta.k
    );
    println!("cluster sizes: {:?}", cluster_sizes(&labels, model.meta.k));
    println!(
        "outliers: {outliers} ({:.2}%)",
        100.0 * outliers as f64 / ds.len().max(1) as f64
    );
    let assigned: Vec<Option<u32>> = labels.iter().copied().map(Some).collect();
    let pairs = args.pairs.options();
    let scores = analysis::score(&space, &assigned, ds.labels.as_deref(), &pairs)?;
    println!("metrics in the {}:", space.name);
    let rows = [("model's assignment".to_string(), scores, None)];
    print!("{}", analysis::scores_table(&rows));
    args.pairs.footnote(&rows);
    Ok(())
}
