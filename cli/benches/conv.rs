//! Convolution speed, side by side in one run: the paper's autoencoder trained for a fixed number
//! of Adam steps on MNIST with (a) candle's built-in convolutions, (b) the trainer's fast ones,
//! (c) PyTorch on the same network, batch size, optimiser and thread count, followed by the
//! encoder's inference pass over the images (the embedding every DEKM iteration computes).
//!
//! ```text
//! cargo bench -p dekm-cli --bench conv -- [--data-dir DIR] [--steps 20] [--repeats 3]
//! ```
//!
//! Threads: rayon's pool (`RAYON_NUM_THREADS`, default all cores) for ours, the same count for
//! PyTorch. The best of `--repeats` rounds is reported for every contestant, and the rounds are
//! interleaved so that a noisy neighbour hurts all three alike.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

mod common;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use common::{measured_peak_gflops, peak_gflops};
use dekm_shared::layers::EncoderSpec;
use dekm_trainer::data::{self, DataSource, LoadOptions};
use dekm_trainer::model::{Autoencoder, ConvBackend, Init, embed};
use dekm_trainer::optim::Adam;

#[global_allocator]
static GLOBAL: dekm_cli::allocator::MiMalloc = dekm_cli::allocator::MiMalloc;

struct Args {
    data_dir: Option<PathBuf>,
    steps: usize,
    warmup: usize,
    batch: usize,
    repeats: usize,
    embed_images: usize,
    skip_candle: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        data_dir: None,
        steps: 20,
        warmup: 2,
        batch: 256,
        repeats: 3,
        embed_images: 70_000,
        skip_candle: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => a.data_dir = Some(value()?.into()),
            "--steps" => a.steps = value()?.parse()?,
            "--warmup" => a.warmup = value()?.parse()?,
            "--batch-size" => a.batch = value()?.parse()?,
            "--repeats" => a.repeats = value()?.parse()?,
            "--embed-images" => a.embed_images = value()?.parse()?,
            "--skip-candle" => a.skip_candle = true,
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    if a.steps == 0 || a.batch == 0 || a.repeats == 0 {
        bail!("--steps, --batch-size and --repeats must be positive");
    }
    Ok(a)
}

/// Multiply-adds per image of every layer (encoder, decoder) of the paper's autoencoder.
fn macs_per_image(spec: &EncoderSpec) -> Result<(u64, u64)> {
    let conv_macs: Vec<u64> = spec
        .conv_geometry()?
        .iter()
        .map(|g| (g.output.height * g.output.width * g.output.channels * g.patch_len()) as u64)
        .collect();
    let conv: u64 = conv_macs.iter().sum();
    let dense = (spec.pre_latent_len()? * spec.latent_dim()) as u64;
    let first = conv_macs.first().copied().unwrap_or(0);
    // Training: forward, weight gradient and input gradient for every layer (the decoder mirrors
    // the encoder), except the input gradient of the first encoder layer, which nobody needs.
    let train = 2 * (conv + dense) * 3 - first;
    Ok((conv + dense, train))
}

struct Round {
    s_per_batch: f64,
    embed_per_s: f64,
}

fn run_ours(backend: ConvBackend, spec: &EncoderSpec, xs: &Tensor, a: &Args) -> Result<Round> {
    let varmap = VarMap::new();
    let ae = Autoencoder::init(spec, &varmap, 0, backend, Init::Torch, &Device::Cpu)?;
    let mut vars: Vec<_> = varmap
        .data()
        .lock()
        .expect("fresh map")
        .clone()
        .into_iter()
        .collect();
    vars.sort_by(|x, y| x.0.cmp(&y.0));
    let mut opt = Adam::new(vars, 1e-3)?;
    let n = xs.dim(0)?;
    let step = |i: usize, opt: &mut Adam| -> Result<()> {
        let start = (i * a.batch) % (n - a.batch + 1);
        let xb = xs.narrow(0, start, a.batch)?;
        let loss = candle_nn::loss::mse(&ae.forward(&xb)?, &xb)?;
        opt.backward_step(&loss)?;
        loss.to_scalar::<f32>()?;
        Ok(())
    };
    for i in 0..a.warmup {
        step(i, &mut opt)?;
    }
    let t = Instant::now();
    for i in 0..a.steps {
        step(a.warmup + i, &mut opt)?;
    }
    let s_per_batch = t.elapsed().as_secs_f64() / a.steps as f64;
    let m = a.embed_images.min(n);
    let t = Instant::now();
    embed(&ae.encoder, &xs.narrow(0, 0, m)?, 1024)?;
    let embed_per_s = m as f64 / t.elapsed().as_secs_f64();
    Ok(Round {
        s_per_batch,
        embed_per_s,
    })
}

fn run_torch(a: &Args, data_dir: &std::path::Path, threads: usize) -> Result<Option<Round>> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench_conv_torch.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .args(["--data-dir", &data_dir.display().to_string()])
        .args(["--steps", &a.steps.to_string()])
        .args(["--warmup", &a.warmup.to_string()])
        .args(["--batch-size", &a.batch.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--embed-images", &a.embed_images.to_string()])
        .output()
        .context("running python3 scripts/bench_conv_torch.py")?;
    if !out.status.success() {
        bail!(
            "PyTorch script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).context("PyTorch output")?;
    if let Some(e) = v.get("error") {
        println!("PyTorch: skipped ({e})");
        return Ok(None);
    }
    let get = |k: &str| v.get(k).and_then(|x| x.as_f64()).context(k.to_string());
    Ok(Some(Round {
        s_per_batch: get("s_per_batch")?,
        embed_per_s: get("embed_images_per_s")?,
    }))
}

fn main() -> Result<()> {
    dekm_cli::allocator::keep_freed_memory();
    // SAFETY: first statement of `main` after the allocator option; no thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        dekm_cli::threads::one_candle_thread();
    }
    let a = parse_args()?;
    // `cargo bench` runs in `trainer/`; the project's data lies beside the repository.
    let beside_repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"));
    let explicit = a.data_dir.clone().or_else(|| {
        std::env::var_os("DEKM_DATA")
            .is_none()
            .then_some(beside_repo)
            .filter(|p| p.is_dir())
    });
    let Some(dir) = data::default_data_dir(explicit.as_deref()) else {
        println!("SKIPPED: no data directory (--data-dir or DEKM_DATA; ../shared/data)");
        return Ok(());
    };
    let ds = data::load(
        &DataSource::Mnist,
        &LoadOptions {
            data_dir: Some(dir.clone()),
            limit: Some(a.embed_images.max(a.batch * (a.steps + a.warmup))),
            ..Default::default()
        },
    )?;
    let normalizer = ds.fit_normalizer();
    let flat = ds
        .normalized(&normalizer)
        .map_err(|(i, e)| anyhow::anyhow!("sample {i}: {e}"))?;
    let spec = ds.encoder_spec(
        10,
        (
            Default::default(),
            Default::default(),
            dekm_shared::TimePooling::MeanStd,
        ),
    );
    let xs =
        Tensor::from_vec(flat, (ds.len(), spec.input_len()), &Device::Cpu)?.to_dtype(DType::F32)?;
    let threads = rayon::current_num_threads();
    let (infer_macs, train_macs) = macs_per_image(&spec)?;
    println!(
        "paper autoencoder, MNIST, batch {}, {} timed steps after {} warm-up, {} thread(s), best of {}",
        a.batch, a.steps, a.warmup, threads, a.repeats
    );

    let mut best: [Option<Round>; 3] = [None, None, None];
    for round in 0..a.repeats {
        let mut results = Vec::new();
        if !a.skip_candle {
            results.push((0, Some(run_ours(ConvBackend::Candle, &spec, &xs, &a)?)));
        }
        results.push((1, Some(run_ours(ConvBackend::Fast, &spec, &xs, &a)?)));
        results.push((2, run_torch(&a, &dir, threads)?));
        for (i, r) in results {
            let Some(r) = r else { continue };
            eprintln!(
                "round {}: contestant {i}: {:.4} s/batch, {:.0} images/s embedding",
                round + 1,
                r.s_per_batch,
                r.embed_per_s
            );
            let b = &mut best[i];
            *b = Some(match b.take() {
                Some(o) => Round {
                    s_per_batch: o.s_per_batch.min(r.s_per_batch),
                    embed_per_s: o.embed_per_s.max(r.embed_per_s),
                },
                None => r,
            });
        }
    }

    let peak = peak_gflops(threads);
    let batches_per_epoch = 70_000f64 / a.batch as f64;
    println!();
    println!(
        "| convolutions | s per batch | s per 70k epoch | training GFLOP/s | embedding images/s | embedding GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|");
    let names = [
        "(a) candle built-in",
        "(b) dekm fast (im2col + GEMM)",
        "(c) PyTorch",
    ];
    for (name, r) in names.iter().zip(&best) {
        let Some(r) = r else { continue };
        println!(
            "| {name} | {:.4} | {:.1} | {:.1} | {:.0} | {:.1} |",
            r.s_per_batch,
            r.s_per_batch * batches_per_epoch,
            (train_macs * 2 * a.batch as u64) as f64 / r.s_per_batch / 1e9,
            r.embed_per_s,
            r.embed_per_s * (infer_macs * 2) as f64 / 1e9,
        );
    }
    println!();
    if let (Some(b), Some(c)) = (&best[1], &best[2]) {
        println!(
            "training ratio (b)/(c) = {:.3} (time; below 1 means faster than PyTorch)",
            b.s_per_batch / c.s_per_batch
        );
        println!(
            "embedding ratio (b)/(c) = {:.3} (time per image)",
            c.embed_per_s / b.embed_per_s
        );
    }
    if let (Some(a_), Some(b)) = (&best[0], &best[1]) {
        println!(
            "training speed-up over candle (a)/(b) = {:.2}x",
            a_.s_per_batch / b.s_per_batch
        );
    }
    match peak {
        Some((ghz, gflops)) => println!(
            "machine peak ≈ {gflops:.0} GFLOP/s ({threads} core(s) x {:.0} FLOP/cycle x {ghz:.2} GHz as /proc/cpuinfo reports)",
            gflops / threads as f64 / ghz
        ),
        None => println!("machine peak: unknown (no /proc/cpuinfo)"),
    }
    let m = measured_peak_gflops();
    println!(
        "measured FMA rate of one core (turbo included): {m:.0} GFLOP/s; x {threads} = {:.0} GFLOP/s",
        m * threads as f64
    );
    println!(
        "work per image: {:.2} MFLOP inference, {:.2} MFLOP training step",
        (infer_macs * 2) as f64 / 1e6,
        (train_macs * 2) as f64 / 1e6
    );
    Ok(())
}
