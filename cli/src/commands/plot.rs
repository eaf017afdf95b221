//! `dekm plot`: pictures of a trained model on a data set.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dekm_cli::plots;
use dekm_cli::progress::Step;
use dekm_trainer::export::read_model;
use dekm_trainer::pipeline::{assign_latent, latent_on};
use dekm_trainer::train::History;

use super::args::{DataArgs, DeviceArgs};

#[derive(Args)]
pub(crate) struct PlotArgs {
    /// Model directory (its metrics.json supplies the training curves).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Samples drawn in the latent map (evenly spaced).
    #[arg(long, default_value_t = 20_000)]
    max_points: usize,
    /// Also write latent_tsne.png, a t-SNE map of this many evenly spaced samples: exact up to
    /// 5,000 (about a minute for 3,000 on 2 cores), Barnes-Hut above (all 70,000 MNIST latents).
    #[arg(long, default_value_t = 0)]
    tsne: usize,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Writes the model's pictures of the data set.
pub(crate) fn run(args: &PlotArgs) -> Result<()> {
    let model = read_model(&args.model)?;
    let dev = args.device.open()?;
    let ds = args
        .data
        .load(model.meta.k, model.meta.seed, || Ok(dev.clone()))?;
    let z = {
        let _step = Step::new(format!("encoding {} samples", ds.len()));
        latent_on(&model, &ds, &dev)?
    };
    let out = assign_latent(&model, &z)?;
    let labels: Vec<u32> = out.iter().map(|a| a.cluster).collect();
    let outliers: Vec<bool> = out.iter().map(|a| a.outlier).collect();
    let history = std::fs::read(args.model.join("metrics.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| serde_json::from_value::<History>(v.get("history")?.clone()).ok());
    let view = plots::ModelView {
        z: &z,
        d: model.head.latent_dim(),
        labels: &labels,
        outliers: &outliers,
        truth: ds.labels.as_deref(),
        history: history.as_ref(),
        tsne_points: args.tsne,
    };
    let step = Step::new("pictures (PCA, t-SNE, curves)");
    let files = plots::model_pictures(&args.out, &view, args.max_points)?;
    drop(step);
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
