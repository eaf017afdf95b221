//! `dekm sample`: new samples of a cluster drawn by a ClusterGAN model's generator, the check a
//! person makes that a cluster means something. Images become a picture grid, one row per
//! cluster; any data can be written as CSV in the data's units.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use dekm_cli::plots;
use dekm_shared::EncoderSpec;
use dekm_trainer::gan::{Generator, GeneratorInfo};
use dekm_trainer::rng;

/// Most samples drawn per cluster.
const MAX_PER_CLUSTER: usize = 10_000;

#[derive(Args)]
pub(crate) struct SampleArgs {
    /// Model directory written by `dekm train --method clustergan`.
    #[arg(long)]
    model: PathBuf,
    /// The cluster to draw, in the model's numbering (as `dekm evaluate` prints it); every
    /// cluster, one row each, when left out.
    #[arg(long)]
    cluster: Option<u32>,
    /// Samples per cluster.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Output: a .png picture grid (image models) or a .csv file (one sample per row, its
    /// cluster first, values in the data's units).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Draws the samples and writes them.
pub(crate) fn run(a: &SampleArgs) -> Result<()> {
    let png = match a.out.extension().and_then(|e| e.to_str()) {
        Some("png") => true,
        Some("csv") => false,
        _ => bail!("--out {}: name a .png or a .csv file", a.out.display()),
    };
    if a.n == 0 || a.n > MAX_PER_CLUSTER {
        bail!(
            "--n {}: draw 1 to {MAX_PER_CLUSTER} samples per cluster",
            a.n
        );
    }
    let dev = Device::Cpu;
    let (generator, info) = Generator::load(&a.model, &dev)?;
    let k = info.prior.k;
    let clusters: Vec<u32> = match a.cluster {
        Some(c) if (c as usize) < k => vec![c],
        Some(c) => bail!("--cluster {c}: the model has {k} clusters, 0 to {}", k - 1),
        None => (0..k as u32).collect(),
    };
    let codes: Vec<u32> = clusters
        .iter()
        .flat_map(|&c| std::iter::repeat_n(info.codes[c as usize], a.n))
        .collect();
    let x = generator
        .sample(&info.prior, &codes, &mut rng(a.seed, 0), &dev)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let raw = info.to_raw(&x);
    let len = info.spec.input_len();
    if png {
        write_grid(a, &info, &raw, clusters.len())?;
    } else {
        write_csv(a, &raw, len, &clusters)?;
    }
    for &c in &clusters {
        println!(
            "cluster {c}: code {} ({:.0}% of that code's samples are assigned to cluster {c})",
            info.codes[c as usize],
            100.0 * info.agreement[c as usize]
        );
    }
    println!("wrote {} samples to {}", codes.len(), a.out.display());
    Ok(())
}

fn write_grid(a: &SampleArgs, info: &GeneratorInfo, raw: &[f32], rows: usize) -> Result<()> {
    let EncoderSpec::Conv { input, .. } = &info.spec else {
        bail!(
            "--out {}: this model's samples are not images; write a .csv file instead",
            a.out.display()
        );
    };
    let images: Vec<&[f32]> = raw.chunks_exact(input.len()).collect();
    // One row per cluster; a single cluster's samples in a square.
    let cols = if rows == 1 {
        (a.n as f64).sqrt().ceil() as usize
    } else {
        a.n
    };
    let shape = (input.channels, input.height, input.width);
    plots::image_grid(&a.out, &images, shape, cols, 2)?;
    Ok(())
}

fn write_csv(a: &SampleArgs, raw: &[f32], len: usize, clusters: &[u32]) -> Result<()> {
    let file = std::fs::File::create(&a.out)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let header: Vec<String> = std::iter::once("cluster".to_string())
        .chain((0..len).map(|i| format!("x{i}")))
        .collect();
    writeln!(w, "{}", header.join(","))?;
    let per = a.n;
    for (i, sample) in raw.chunks_exact(len).enumerate() {
        let values: Vec<String> = sample.iter().map(f32::to_string).collect();
        writeln!(w, "{},{}", clusters[i / per], values.join(","))?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", a.out.display()))
}
