//! Edge encoder speed, side by side in one run on one thread: the `dekm-edge` encoder (indirect
//! convolutions on channels-last activations with SIMD register tiles, Winograd's algorithm
//! where it saves multiply-adds, no candle; and with every convolution direct), candle's CPU
//! forward of the same exported weights (with the trainer's fused convolutions and with candle's
//! built-in ones), onnxruntime on the same network built from the same file
//! (`scripts/bench_edge_ort.py`), and the `dekm-edge` encoder of the same model packed as int8
//! (`dekm-edge pack --int8`: integer kernels on the bytes).
//!
//! ```text
//! cargo bench -p dekm-cli --bench edge -- --model DIR [--samples 5000] [--batch 64] [--repeats 3]
//! ```
//!
//! Single-sample latency is the median over `--samples` calls on varied MNIST-like inputs;
//! throughput runs batches of `--batch` (dekm-edge through `Encoder::encode_batch`). The process re-runs itself with `RAYON_NUM_THREADS=1`
//! so candle's kernels use one thread, like the edge encoder and onnxruntime. The best of
//! `--repeats` interleaved rounds is reported for every contestant.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Module, Tensor};
use dekm_edge::{Convolutions, Model, file::read_parts};
use dekm_trainer::export::candle_encoder;
use dekm_trainer::model::{ConvBackend, Encoder};

mod common;
use common::{measured_peak_gflops, peak_gflops, vector_isa};

#[global_allocator]
static GLOBAL: dekm_cli::allocator::MiMalloc = dekm_cli::allocator::MiMalloc;

struct Args {
    model: PathBuf,
    samples: usize,
    batch: usize,
    repeats: usize,
    skip_ort: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        model: PathBuf::new(),
        samples: 5000,
        batch: 64,
        repeats: 3,
        skip_ort: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--samples" => a.samples = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--repeats" => a.repeats = value()?.parse()?,
            "--skip-ort" => a.skip_ort = true,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    if a.model.as_os_str().is_empty() {
        bail!(
            "--model DIR is required: any `dekm train` export of MNIST works, e.g. \
             `dekm train --dataset mnist --epochs 1 --max-iter 0 --out target/bench/edge-model`"
        );
    }
    a.samples = a.samples.max(1);
    a.batch = a.batch.max(1);
    a.repeats = a.repeats.max(1);
    Ok(a)
}

/// Median and mean of per-call microseconds.
#[derive(Clone, Copy)]
struct Round {
    p50_us: f64,
    mean_us: f64,
    batch_per_s: f64,
}

fn summarise(mut lat: Vec<f64>, batch_per_s: f64) -> Round {
    lat.sort_by(f64::total_cmp);
    Round {
        p50_us: lat[lat.len() / 2],
        mean_us: lat.iter().sum::<f64>() / lat.len() as f64,
        batch_per_s,
    }
}

fn best(rounds: &[Round]) -> Round {
    Round {
        p50_us: rounds
            .iter()
            .map(|r| r.p50_us)
            .fold(f64::INFINITY, f64::min),
        mean_us: rounds
            .iter()
            .map(|r| r.mean_us)
            .fold(f64::INFINITY, f64::min),
        batch_per_s: rounds.iter().map(|r| r.batch_per_s).fold(0.0, f64::max),
    }
}

/// Deterministic inputs in [0, 1] (normalised pixels), `n` samples of `len`.
fn inputs(n: usize, len: usize) -> Vec<f32> {
    let mut state = 1u32;
    (0..n * len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32
        })
        .collect()
}

fn run_edge(enc: &dekm_edge::Encoder, xs: &[f32], samples: usize, batch: usize) -> Round {
    let len = enc.input_len();
    let mut ws = enc.workspace();
    let mut z = vec![0f32; enc.latent_dim()];
    let pool = xs.len() / len;
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let x = &xs[(i % pool) * len..][..len];
        let t = Instant::now();
        enc.encode(std::hint::black_box(x), &mut ws, &mut z)
            .expect("edge encode");
        std::hint::black_box(&z);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // Batches through `encode_batch` (the dense layers as one product over the batch), from
    // as many places in the pool as fit.
    let batches = (samples / batch).max(1);
    let starts = (pool / batch).max(1);
    let batch = batch.min(pool);
    let mut bws = enc.batch_workspace();
    let mut zs = vec![0f32; batch * enc.latent_dim()];
    let t = Instant::now();
    for b in 0..batches {
        let x = &xs[(b % starts) * batch * len..][..batch * len];
        enc.encode_batch(x, &mut bws, &mut zs).expect("edge encode");
        std::hint::black_box(&zs);
    }
    summarise(lat, (batches * batch) as f64 / t.elapsed().as_secs_f64())
}

fn run_candle(enc: &Encoder, xs: &[f32], len: usize, a: &Args) -> Result<Round> {
    let pool = xs.len() / len;
    let all = Tensor::from_slice(xs, (pool, len), &Device::Cpu)?;
    let mut lat = Vec::with_capacity(a.samples);
    for i in 0..a.samples {
        let t = Instant::now();
        let x = all.narrow(0, i % pool, 1)?;
        let z = enc.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        std::hint::black_box(z);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let batches = (a.samples / a.batch).max(1);
    let b = a.batch.min(pool);
    let t = Instant::now();
    for i in 0..batches {
        let start = (i * b) % (pool - b + 1);
        let z = enc.forward(&all.narrow(0, start, b)?)?.to_vec2::<f32>()?;
        std::hint::black_box(z);
    }
    Ok(summarise(
        lat,
        (batches * b) as f64 / t.elapsed().as_secs_f64(),
    ))
}

fn run_ort(a: &Args, file: &Path, model: &Model) -> Result<Option<(Round, String)>> {
    let spec = &model.meta().encoder;
    let geometry = spec.conv_geometry()?;
    // A dense stack is a graph without convolutions on a `[n, d, 1, 1]` input.
    let input = match (geometry.first(), spec) {
        (Some(first), dekm_shared::EncoderSpec::Conv { .. }) => first.input,
        (None, dekm_shared::EncoderSpec::Dense { input, .. }) => dekm_shared::ImageShape {
            channels: *input,
            height: 1,
            width: 1,
        },
        _ => {
            println!(
                "onnxruntime: skipped (the script builds 2-D convolutional and dense encoders)"
            );
            return Ok(None);
        }
    };
    let layers: Vec<serde_json::Value> = geometry
        .iter()
        .map(|g| serde_json::json!({"stride": g.stride, "pad": g.pad.width}))
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/bench_edge_ort.py");
    let i = input;
    let out = Command::new("python3")
        .arg(script)
        .args(["--model", &file.display().to_string()])
        .args(["--layers", &serde_json::Value::from(layers).to_string()])
        .args([
            "--input",
            &format!("{},{},{}", i.channels, i.height, i.width),
        ])
        .args(["--samples", &a.samples.to_string()])
        .args(["--batch", &a.batch.to_string()])
        .args((spec.activation() == dekm_shared::Activation::LeakyRelu).then_some("--leaky"))
        .output()
        .context("running python3 scripts/bench_edge_ort.py")?;
    if !out.status.success() {
        bail!(
            "onnxruntime script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).context("ort output")?;
    if let Some(e) = v.get("error") {
        println!("onnxruntime: skipped ({e})");
        return Ok(None);
    }
    let get = |k: &str| v.get(k).and_then(|x| x.as_f64()).context(k.to_string());
    Ok(Some((
        Round {
            p50_us: get("batch1_p50_us")?,
            mean_us: get("batch1_mean_us")?,
            batch_per_s: get("batch_per_s")?,
        },
        v["version"].as_str().unwrap_or("?").to_string(),
    )))
}

fn main() -> Result<()> {
    if std::env::var("RAYON_NUM_THREADS").as_deref() != Ok("1") {
        // candle sizes its thread pools from this variable when they are first used; setting
        // it in-process would need `unsafe`, so run again with it set.
        let status = Command::new(std::env::current_exe()?)
            .args(std::env::args().skip(1))
            .env("RAYON_NUM_THREADS", "1")
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    dekm_cli::allocator::keep_freed_memory();
    let a = parse_args()?;
    let file = if a.model.is_dir() {
        a.model.join(dekm_shared::names::MODEL_FILE)
    } else {
        a.model.clone()
    };
    let parts = read_parts(&a.model)?;
    let model = Model::from_parts(&parts)?;
    let int8 = Model::from_parts(&parts.to_int8()?)?;
    // Every int8 kernel this CPU runs, the fastest (the one a device picks) last.
    let kernels: Vec<dekm_edge::Encoder> = dekm_edge::Int8Kernel::ALL
        .iter()
        .filter_map(|&k| int8.encoder().clone().with_int8_kernel(k).ok())
        .collect();
    let spec = model.meta().encoder.clone();
    let direct =
        dekm_edge::Encoder::with_convolutions(&spec, |n| parts.tensor(n), Convolutions::Direct)?;
    let len = spec.input_len();
    let fused = candle_encoder(&parts, ConvBackend::Fast)?;
    let builtin = candle_encoder(&parts, ConvBackend::Candle)?;
    let xs = inputs(256, len);

    let flops = model.encoder().flops_per_sample() as f64;
    let executed = model.encoder().executed_flops_per_sample() as f64;
    println!(
        "encoder {:?}: {:.2} MFLOP per sample ({:.2} as dekm-edge runs them); {} samples per round, batch {}, best of {}, one thread, {}",
        file.display(),
        flops / 1e6,
        executed / 1e6,
        a.samples,
        a.batch,
        a.repeats,
        vector_isa().0
    );
    let (mut edge, mut dir, mut cf, mut cb, mut ort) = (vec![], vec![], vec![], vec![], vec![]);
    let mut q: Vec<Vec<Round>> = vec![vec![]; kernels.len()];
    let mut ort_version = None;
    // The FMA rate is measured in every round and the highest kept: the clock wanders.
    let mut fma = 0.0f64;
    // Warm-up: page in weights and kernels.
    run_edge(model.encoder(), &xs, 200, a.batch);
    for round in 0..a.repeats {
        edge.push(run_edge(model.encoder(), &xs, a.samples, a.batch));
        dir.push(run_edge(&direct, &xs, a.samples, a.batch));
        for (rounds, enc) in q.iter_mut().zip(&kernels) {
            rounds.push(run_edge(enc, &xs, a.samples, a.batch));
        }
        cf.push(run_candle(&fused, &xs, len, &a)?);
        cb.push(run_candle(&builtin, &xs, len, &a)?);
        if !a.skip_ort
            && let Some((r, v)) = run_ort(&a, &file, &model)?
        {
            ort.push(r);
            ort_version = Some(v);
        }
        fma = fma.max(measured_peak_gflops());
        println!("round {} done", round + 1);
    }
    let (peak_ghz, peak) = peak_gflops(1).unwrap_or((0.0, f64::NAN));
    println!(
        "\n| encoder (one thread) | batch 1 p50 µs | batch 1 mean µs | batch {} samples/s | GFLOP/s at batch 1 | GFLOP/s batched |",
        a.batch
    );
    println!("|---|---|---|---|---|---|");
    let e = best(&edge);
    let mut rows = vec![
        (
            "dekm-edge (SIMD tiles, Winograd where it pays)".to_string(),
            e,
        ),
        (
            "dekm-edge, every convolution direct".to_string(),
            best(&dir),
        ),
        (
            "candle 0.11, dekm fused convolutions".to_string(),
            best(&cf),
        ),
        ("candle 0.11, built-in convolutions".to_string(), best(&cb)),
    ];
    if let Some(v) = &ort_version {
        rows.push((format!("onnxruntime {v} (from Python)"), best(&ort)));
    }
    let int8_rows = kernels.len();
    for (rounds, enc) in q.iter().zip(&kernels) {
        let kernel = enc.int8_kernel().map_or("?", |k| k.name());
        rows.push((format!("dekm-edge int8 ({kernel})"), best(rounds)));
    }
    // Each contestant's GFLOP/s count the multiply-adds it runs: the model's taps, but for
    // dekm-edge's Winograd layers their products (fewer), so that no figure exceeds the FMA rate.
    for (i, (name, r)) in rows.iter().enumerate() {
        let flops = if i == 0 { executed } else { flops };
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} |",
            r.p50_us,
            r.mean_us,
            r.batch_per_s,
            flops / r.p50_us / 1e3,
            flops * r.batch_per_s / 1e9
        );
    }
    println!();
    for (name, r) in &rows[1..rows.len() - int8_rows] {
        println!(
            "batch 1 latency ratio dekm-edge / {name}: {:.2}; batched throughput ratio: {:.2}",
            e.p50_us / r.p50_us,
            e.batch_per_s / r.batch_per_s
        );
    }
    let (fastest, i) = rows[rows.len() - 1].clone();
    println!(
        "{fastest} / f32 dekm-edge: batch 1 latency {:.2}, batched throughput {:.2} (integer \
         multiply-adds counted as FLOPs: the FMA figures below are for f32 only)",
        i.p50_us / e.p50_us,
        i.batch_per_s / e.batch_per_s
    );
    for (name, r) in rows.iter().filter(|(n, _)| n.starts_with("onnxruntime")) {
        println!(
            "batch 1 latency ratio {fastest} / {name}: {:.2}; batched throughput ratio: {:.2}",
            i.p50_us / r.p50_us,
            i.batch_per_s / r.batch_per_s
        );
    }
    println!(
        "one core's peak: {peak:.1} GFLOP/s ({peak_ghz:.2} GHz x {} FLOP/cycle) → floor {:.1} µs per sample",
        (peak / peak_ghz).round(),
        flops / peak / 1e3
    );
    let m = fma;
    println!(
        "one core's measured FMA rate (turbo included, the best of every round's): {m:.1} GFLOP/s → floor {:.1} µs per sample (direct); dekm-edge runs {:.2} MFLOP at {:.0}% of it (floor {:.1} µs)",
        flops / m / 1e3,
        executed / 1e6,
        100.0 * executed / e.p50_us / 1e3 / m,
        executed / m / 1e3,
    );
    Ok(())
}
