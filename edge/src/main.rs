//! `dekm-edge`: assign samples with an exported model, inspect it, pack it into a bundle, and
//! time it.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use dekm_data::{Format, RecordingReader, SampleStream};
use dekm_edge::encoder::BATCH;
use dekm_edge::store::DeviceStore;
use dekm_edge::{
    Model, ModelParts, Session, StreamError, StreamSession, Summary, bundle, file, fs,
};

#[derive(Parser)]
#[command(
    name = "dekm-edge",
    version,
    about = "Assign samples to the clusters of a dekm model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Assign every sample of the inputs; one JSON line per sample on stdout.
    Assign(AssignArgs),
    /// Print the model's metadata, tensors and checksum.
    Info {
        /// Model directory, model.safetensors or bundle.
        #[arg(long)]
        model: PathBuf,
    },
    /// Convert an export into a bundle (one checksummed byte blob for devices).
    Pack {
        /// Model directory or model.safetensors.
        #[arg(long)]
        model: PathBuf,
        /// Bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// Store the encoder's weights as int8 (one scale per output channel): a bundle about
        /// four times smaller, whose encoder the device runs in integers.
        #[arg(long)]
        int8: bool,
    },
    /// Time single-sample latency and batch throughput on this machine (one thread).
    Bench(BenchArgs),
    /// Make a device store's previous model current again (no network needed).
    Rollback {
        /// Device store directory (as written by `sync`).
        #[arg(long)]
        store: PathBuf,
    },
    /// Fetch the server's active model into a device store when it changed, and report stats.
    #[cfg(feature = "fleet")]
    Sync(SyncArgs),
}

#[cfg(feature = "fleet")]
#[derive(clap::Args)]
struct SyncArgs {
    /// Server address, e.g. http://10.0.0.5:50051.
    #[arg(long)]
    server: String,
    /// This device's name, as the server aggregates its stats.
    #[arg(long)]
    device_id: String,
    /// Device store directory: models/, CURRENT, PREVIOUS (created on first sync).
    #[arg(long)]
    store: PathBuf,
    /// Bearer token, when the server protects model fetching.
    #[arg(long, env = "DEKM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate to trust for an https:// server (besides the system roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Counters to report (JSON written by `assign --stats-out`).
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Keep running: follow the server's model changes and sync on each.
    #[arg(long)]
    watch: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnError {
    /// Report the bad sample on stderr and go on.
    Skip,
    /// Write `{"index": i, "error": "..."}` into the output stream and go on.
    Emit,
    /// Stop at the first bad sample with exit status 2.
    Fail,
}

#[derive(clap::Args)]
struct AssignArgs {
    /// Model directory, model.safetensors or bundle.
    #[arg(long)]
    model: PathBuf,
    /// Input files, read in order (`-` is stdin). IDX (`*-ubyte[.gz]`), `.csv`, `.npy`, or raw
    /// little-endian f32 (`.f32`, stdin).
    #[arg(long = "input", default_value = "-")]
    inputs: Vec<PathBuf>,
    /// Input format, instead of guessing from each file name.
    #[arg(long)]
    format: Option<Format>,
    /// Outlier threshold: this quantile of each cluster's training scores instead of the
    /// model's (within the calibrated levels, 0.5 to 1.0).
    #[arg(long)]
    threshold_quantile: Option<f32>,
    /// What to do with a sample that cannot be assigned (ragged row, NaN, wrong length).
    #[arg(long, value_enum, default_value_t = OnError::Skip)]
    on_error: OnError,
    /// Print per-cluster counts, outlier rate and recent outliers to stderr at the end.
    #[arg(long)]
    summary: bool,
    /// Do not write the per-sample lines (with --summary: only the summary).
    #[arg(long)]
    quiet: bool,
    /// Write the per-cluster counters, tagged with the model id, to this JSON file (what
    /// `sync --stats` reports to the server).
    #[arg(long)]
    stats_out: Option<PathBuf>,
    /// The inputs are recordings of a model trained on a stream: one reading per row (CSV with
    /// a header naming the model's channels, or `.npy` `[T, C]`), assigned window by window
    /// as they arrive; one line per window with its first reading's index and timestamp.
    #[arg(long, conflicts_with = "format")]
    stream: bool,
}

/// Values one streamed window may hold (channels x readings): 64 KiB of ring and as much
/// again for the window laid out for the encoder.
const STREAM_CAPACITY: usize = 16 * 1024;

#[derive(clap::Args)]
struct BenchArgs {
    /// Model directory, model.safetensors or bundle.
    #[arg(long)]
    model: PathBuf,
    /// Samples to time (the inputs are cycled; without inputs, zeros of the right length).
    #[arg(long, default_value_t = 5000)]
    samples: usize,
    /// Batch size of the throughput figure.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Optional input file to take samples from.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Run an int8 model with this integer kernel rather than the fastest one the CPU has
    /// (the same results): `portable` (what a CPU with neither AVX2 nor a byte dot product
    /// runs), `avx2`, `avx-vnni`, `avx512-vnni` (x86-64), `neon-dotprod` (64-bit Arm).
    #[arg(long)]
    int8_kernel: Option<String>,
}

/// The model at `path` and its id (the bundle id, whatever form the file has).
fn load(path: &Path, quantile: Option<f32>) -> Result<(Model, String)> {
    let parts = file::read_parts(path)?;
    let mut model = Model::from_parts(&parts).with_context(|| path.display().to_string())?;
    if let Some(q) = quantile {
        model.set_threshold_quantile(q)?;
    }
    let id = bundle::model_id(&bundle::sha256_hex(&parts.to_bundle())).to_string();
    Ok((model, id))
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        // The reader of stdout went away (`dekm-edge assign ... | head`): end quietly, as other
        // command-line tools do, with the shell's status for a closed pipe.
        Err(e) if closed_stdout(&e) => std::process::ExitCode::from(141),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `e` is a write to a pipe whose reader has gone.
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Assign(args) => return assign(&args),
        Command::Info { model } => info(&model)?,
        Command::Pack { model, out, int8 } => pack(&model, &out, int8)?,
        Command::Bench(args) => bench(&args)?,
        Command::Rollback { store } => {
            let id = DeviceStore::at(&store).rollback()?;
            println!("current model: {id}");
        }
        #[cfg(feature = "fleet")]
        Command::Sync(args) => sync(&args)?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// One assignment as a JSON object's fields (without braces).
fn assignment_fields(a: &dekm_edge::Assignment) -> String {
    format!(
        r#""cluster":{},"distance":{},"margin":{},"score":{},"outlier":{}"#,
        a.cluster, a.distance, a.margin, a.score, a.outlier
    )
}

fn assign(args: &AssignArgs) -> Result<std::process::ExitCode> {
    if args.stream {
        return assign_stream(args);
    }
    let (model, model_id) = load(&args.model, args.threshold_quantile)?;
    let mut run = Assigner {
        session: model.session(),
        summary: Summary::<16>::new(model.k()),
        out: BufWriter::with_capacity(1 << 16, std::io::stdout().lock()),
        pending: (Vec::with_capacity(BATCH * model.input_len()), 0),
        args,
    };
    let mut row = Vec::with_capacity(model.input_len());
    let mut index = 0u64;
    let mut failed = false;
    'files: for path in &args.inputs {
        let format = args.format.unwrap_or_else(|| Format::from_path(path));
        let mut stream = SampleStream::open(path, format, Some(model.input_len()))?;
        while let Some(r) = stream.next_into(&mut row) {
            let i = index;
            index += 1;
            let problem = match r.map_err(split_row_error) {
                Ok(()) => {
                    let (rows, first) = &mut run.pending;
                    if rows.is_empty() {
                        *first = i;
                    }
                    rows.extend_from_slice(&row);
                    if rows.len() < BATCH * row.len() {
                        continue;
                    }
                    None
                }
                Err(e) => Some(e),
            };
            // A full batch, or a problem that must be reported after the rows before it.
            if run.flush()? {
                failed = true;
                break 'files;
            }
            match problem {
                None => {}
                // The stream itself broke (I/O, truncation): no later sample can be trusted.
                Some(Err(e)) => {
                    run.out.flush()?;
                    return Err(e.into());
                }
                Some(Ok(msg)) => {
                    run.summary.record_rejected();
                    let place = format!("sample {i}");
                    let fields = format!(r#""index":{i},"#);
                    if reject(args.on_error, &mut run.out, &place, &fields, &msg)? {
                        failed = true;
                        break 'files;
                    }
                }
            }
        }
    }
    if !failed {
        failed = run.flush()?;
    }
    run.out.flush()?;
    finish(args, &run.summary, &model, &model_id, failed)
}

/// `assign`'s state: rows are read one at a time but assigned [`BATCH`] at a time
/// ([`Session::assign_all`]: the encoder's dense layers over the batch, each sample's result
/// exactly the one it gets alone), and written in the order they were read.
struct Assigner<'m, 'a, W: Write> {
    session: Session<'m>,
    summary: Summary<16>,
    out: W,
    /// Rows read and not yet assigned, one after another, and the index of the first.
    pending: (Vec<f32>, u64),
    args: &'a AssignArgs,
}

impl<W: Write> Assigner<'_, '_, W> {
    /// Assigns and writes the pending rows; true when `--on-error fail` stopped the run at one
    /// of them (the rows after it are neither written nor counted).
    fn flush(&mut self) -> Result<bool> {
        let (rows, first) = &mut self.pending;
        let len = self.session.model().input_len();
        let (mut stop, mut broken) = (false, None);
        let (summary, out, args) = (&mut self.summary, &mut self.out, self.args);
        self.session.assign_all(rows.chunks_exact(len), |j, r| {
            if stop || broken.is_some() {
                return;
            }
            let i = *first + j as u64;
            let written = match r {
                Ok(a) => {
                    summary.record(i, &a);
                    if args.quiet {
                        Ok(())
                    } else {
                        writeln!(out, r#"{{"index":{i},{}}}"#, assignment_fields(&a))
                            .map_err(anyhow::Error::from)
                    }
                }
                Err(e) => {
                    summary.record_rejected();
                    let place = format!("sample {i}");
                    let fields = format!(r#""index":{i},"#);
                    reject(args.on_error, out, &place, &fields, &e.to_string())
                        .map(|fail| stop = fail)
                }
            };
            broken = written.err();
        });
        rows.clear();
        broken.map_or(Ok(stop), Err)
    }
}

/// A row-level problem (reported, and reading goes on) as its message; anything else (the
/// file itself broke) as the error that ends the run.
fn split_row_error(e: dekm_data::DataError) -> Result<String, dekm_data::DataError> {
    if e.is_row_error() {
        Ok(e.to_string())
    } else {
        Err(e)
    }
}

/// Handles a sample or reading that could not be assigned as `--on-error` says: on stderr
/// naming `place`, or as an error line (`fields` first); true when the run must stop.
fn reject(
    on_error: OnError,
    out: &mut impl Write,
    place: &str,
    fields: &str,
    msg: &str,
) -> Result<bool> {
    match on_error {
        OnError::Skip => eprintln!("{place}: {msg} (skipped)"),
        OnError::Emit => writeln!(out, r#"{{{fields}"error":{}}}"#, json_str(msg))?,
        OnError::Fail => {
            eprintln!("{place}: {msg}");
            return Ok(true);
        }
    }
    Ok(false)
}

/// The summary and counters at the end of `assign`, and its exit status.
fn finish(
    args: &AssignArgs,
    summary: &Summary<16>,
    model: &Model,
    model_id: &str,
    failed: bool,
) -> Result<std::process::ExitCode> {
    if args.summary {
        print_summary(summary, model);
    }
    if let Some(path) = &args.stats_out {
        let json = serde_json::to_vec_pretty(&summary.counters(model_id))?;
        fs::write_atomic(path, &json).with_context(|| path.display().to_string())?;
    }
    Ok(if failed {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// A recording's readings one by one: CSV through the recording reader (header checked
/// against the model's channels), `.npy` rows through the sample stream.
enum Readings {
    Csv(RecordingReader<Box<dyn std::io::BufRead>>),
    Npy { rows: SampleStream, row: usize },
}

impl Readings {
    fn open(path: &Path, channels: &[String]) -> Result<Self> {
        if Format::from_path(path) == Format::Npy {
            let rows = SampleStream::open(path, Format::Npy, Some(channels.len()))?;
            if rows.dim() != Some(channels.len()) {
                bail!(
                    "{}: rows of {:?} values, but the model reads {} channels",
                    path.display(),
                    rows.dim(),
                    channels.len()
                );
            }
            return Ok(Self::Npy { rows, row: 0 });
        }
        let reader: Box<dyn std::io::BufRead> = if path == Path::new("-") {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
            Box::new(std::io::BufReader::new(file))
        };
        let r = RecordingReader::new(reader, path)?;
        if r.channels() != channels {
            bail!(
                "{}: the recording's channels {:?} are not the model's {:?} (same names, same order)",
                path.display(),
                r.channels(),
                channels
            );
        }
        Ok(Self::Csv(r))
    }

    /// The next reading into `row`: its line (CSV) or row (`.npy`, from 1) and timestamp, or a
    /// row error, or `None` at the end. Errors that end the file come back as
    /// `Some(Err(Err(..)))`.
    #[allow(clippy::type_complexity)]
    fn next_into(
        &mut self,
        row: &mut Vec<f32>,
    ) -> Option<Result<(usize, Option<String>), Result<String, dekm_data::DataError>>> {
        match self {
            Self::Csv(r) => Some(
                r.next_into(row)?
                    .map(|i| (i.line, i.timestamp))
                    .map_err(split_row_error),
            ),
            Self::Npy { rows, row: n } => {
                *n += 1;
                Some(
                    rows.next_into(row)?
                        .map(|()| (*n, None))
                        .map_err(split_row_error),
                )
            }
        }
    }
}

fn assign_stream(args: &AssignArgs) -> Result<std::process::ExitCode> {
    let (model, model_id) = load(&args.model, args.threshold_quantile)?;
    let mut session = StreamSession::<'_, STREAM_CAPACITY>::new(&model)?;
    let spec = session.spec().clone();
    let mut summary = Summary::<16>::new(model.k());
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut row = Vec::with_capacity(spec.channel_count());
    // Timestamps of the last `window` accepted readings, by reading index modulo the window.
    let mut stamps: Vec<Option<String>> = vec![None; spec.window];
    let mut failed = false;
    'files: for path in &args.inputs {
        let mut readings = Readings::open(path, &spec.channels)?;
        while let Some(r) = readings.next_into(&mut row) {
            let result = r.and_then(|(line, stamp)| {
                let index = session.readings();
                match session.push(&row) {
                    Ok(w) => {
                        stamps[(index % spec.window as u64) as usize] = stamp;
                        Ok(w)
                    }
                    Err(e @ StreamError::Window { .. }) => Err(Ok(e.to_string())),
                    Err(e) => Err(Ok(format!("line {line}: {e}"))),
                }
            });
            match result {
                Ok(None) => {}
                Ok(Some(w)) => {
                    summary.record(w.start, &w.assignment);
                    if !args.quiet {
                        let stamp = &stamps[(w.start % spec.window as u64) as usize];
                        let stamp = stamp
                            .as_deref()
                            .map(|s| format!(r#","timestamp":{}"#, json_str(s)))
                            .unwrap_or_default();
                        writeln!(
                            out,
                            r#"{{"start":{}{stamp},{}}}"#,
                            w.start,
                            assignment_fields(&w.assignment)
                        )?;
                    }
                }
                Err(Err(e)) => {
                    out.flush()?;
                    return Err(e.into());
                }
                Err(Ok(msg)) => {
                    summary.record_rejected();
                    let place = path.display().to_string();
                    if reject(args.on_error, &mut out, &place, "", &msg)? {
                        failed = true;
                        break 'files;
                    }
                }
            }
        }
    }
    out.flush()?;
    finish(args, &summary, &model, &model_id, failed)
}

fn print_summary(s: &Summary<16>, model: &Model) {
    eprintln!(
        "assigned {} samples, rejected {}, outlier rate {:.2}% (threshold quantile {})",
        s.assigned(),
        s.rejected(),
        100.0 * s.outlier_rate(),
        model.threshold_quantile()
    );
    eprintln!("cluster  samples  outliers");
    for (c, (n, o)) in s.counts().iter().zip(s.outlier_counts()).enumerate() {
        eprintln!("{c:>7}  {n:>7}  {o:>8}");
    }
    let recent: Vec<String> = s
        .recent_outliers()
        .map(|e| format!("#{} (cluster {}, score {:.3})", e.index, e.cluster, e.score))
        .collect();
    if !recent.is_empty() {
        eprintln!("recent outliers: {}", recent.join(", "));
    }
}

fn info(path: &Path) -> Result<()> {
    let parts = file::read_parts(path)?;
    let meta = parts.meta();
    let bytes = std::fs::read(if path.is_dir() {
        path.join(dekm_shared::names::MODEL_FILE)
    } else {
        path.to_path_buf()
    })?;
    let all = parts.widened_tensors();
    let tensors: Vec<serde_json::Value> = all
        .iter()
        .map(|t| {
            let int8 = parts.int8_tensors().iter().any(|q| q.name == t.name);
            let dtype = if int8 { "int8" } else { "f32" };
            serde_json::json!({"name": t.name, "shape": t.shape, "dtype": dtype})
        })
        .collect();
    let info = serde_json::json!({
        "file_sha256": bundle::sha256_hex(&bytes),
        "kind": if bundle::is_bundle(&bytes) { "bundle" } else { "safetensors" },
        "meta": serde_json::from_str::<serde_json::Value>(&meta.to_json())?,
        "input_len": meta.input_len(),
        "latent_dim": meta.encoder.latent_dim(),
        "parameters": all.iter().filter(|t| t.name.starts_with("encoder.")).map(|t| t.data.len()).sum::<usize>(),
        "tensors": tensors,
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

fn pack(model: &Path, out: &Path, int8: bool) -> Result<()> {
    let mut parts: ModelParts = file::read_parts(model)?;
    if int8 {
        parts = parts.to_int8()?;
    }
    // Prove the bundle decodes to the same parts before anyone ships it.
    let bytes = parts.to_bundle();
    if ModelParts::from_bundle(&bytes)? != parts {
        bail!("internal error: the bundle does not decode to the export it came from");
    }
    fs::write_atomic(out, &bytes).with_context(|| out.display().to_string())?;
    println!(
        "{}  {} ({} bytes)",
        bundle::sha256_hex(&bytes),
        out.display(),
        bytes.len()
    );
    Ok(())
}

/// Samples for the benchmark: read from `input` (at most `n`) or zeros.
fn bench_samples(model: &Model, input: Option<&Path>, n: usize) -> Result<Vec<Vec<f32>>> {
    let Some(path) = input else {
        return Ok(vec![vec![0.0; model.input_len()]; 1]);
    };
    let mut stream = SampleStream::open(path, Format::from_path(path), Some(model.input_len()))?;
    let mut rows = Vec::new();
    let mut row = Vec::new();
    while rows.len() < n.min(4096) {
        match stream.next_into(&mut row) {
            Some(Ok(())) => rows.push(row.clone()),
            Some(Err(e)) if e.is_row_error() => {}
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    if rows.is_empty() {
        bail!("{}: no usable samples", path.display());
    }
    Ok(rows)
}

fn bench(args: &BenchArgs) -> Result<()> {
    let (mut model, _) = load(&args.model, None)?;
    if let Some(id) = &args.int8_kernel {
        let kernel = dekm_edge::Int8Kernel::from_id(id).with_context(|| {
            let ids: Vec<&str> = dekm_edge::Int8Kernel::ALL.iter().map(|k| k.id()).collect();
            format!("unknown int8 kernel {id:?}: one of {}", ids.join(", "))
        })?;
        model = model.with_int8_kernel(kernel)?;
    }
    match model.encoder().int8_kernel() {
        Some(k) => println!("encoder: int8 weights and activations, {}", k.name()),
        None => println!("encoder: f32"),
    }
    let samples = bench_samples(&model, args.input.as_deref(), args.samples)?;
    let mut session = model.session();
    let n = args.samples.max(1);
    for s in samples.iter().cycle().take(n.min(500)) {
        session.assign(s)?;
    }
    let mut lat = Vec::with_capacity(n);
    for s in samples.iter().cycle().take(n) {
        let t = Instant::now();
        std::hint::black_box(session.assign(std::hint::black_box(s))?);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    let batch = args.batch.max(1);
    let batches = (n / batch).max(1);
    let t = Instant::now();
    let mut failed = None;
    for b in 0..batches {
        let chunk = samples.iter().cycle().skip(b * batch).take(batch);
        session.assign_all(chunk.map(Vec::as_slice), |_, r| match r {
            Ok(a) => {
                std::hint::black_box(a);
            }
            Err(e) => failed = Some(e),
        });
    }
    let per_s = (batches * batch) as f64 / t.elapsed().as_secs_f64();
    if let Some(e) = failed {
        return Err(e.into());
    }
    // The multiply-adds this encoder runs (a Winograd layer's products, not its taps).
    let flops = model.encoder().executed_flops_per_sample() as f64;
    println!(
        "batch 1: mean {mean:.1} us, p50 {:.1} us, p99 {:.1} us, min {:.1} us over {n} samples ({:.2} GFLOP/s)",
        pct(0.5),
        pct(0.99),
        lat[0],
        flops / pct(0.5) / 1e3
    );
    println!(
        "batch {batch}: {per_s:.0} samples/s ({:.2} GFLOP/s), one thread (Session::assign_all)",
        flops * per_s / 1e9
    );
    Ok(())
}

#[cfg(feature = "fleet")]
fn sync(args: &SyncArgs) -> Result<()> {
    use dekm_edge::fleet;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = DeviceStore::at(&args.store);
        let ca = match &args.ca {
            Some(p) => Some(std::fs::read(p).with_context(|| p.display().to_string())?),
            None => None,
        };
        let mut client = fleet::connect(&args.server, args.token.as_deref(), ca.as_deref()).await?;
        let once = |client: &mut fleet::Client| {
            let store = store.clone();
            let mut client = client.clone();
            async move {
                let outcome = fleet::sync_once(&mut client, &store, &args.device_id).await?;
                match &outcome {
                    fleet::Synced::NotModified { model_id } => {
                        println!("not modified: {model_id}")
                    }
                    fleet::Synced::Updated { model_id, previous } => println!(
                        "updated: {model_id} (previous: {})",
                        previous.as_deref().unwrap_or("none")
                    ),
                }
                anyhow::Ok(())
            }
        };
        once(&mut client).await?;
        if let Some(path) = &args.stats {
            let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
            let counters: dekm_edge::Counters = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a stats file", path.display()))?;
            fleet::report(&mut client, &args.device_id, &counters).await?;
            println!("reported stats for {}", counters.model_id);
        }
        if args.watch {
            let mut updates = fleet::watch(&mut client, &args.device_id).await?;
            while let Some(update) = updates.message().await? {
                let changed = store.current()?.as_deref() != Some(update.model_id.as_str());
                if !update.model_id.is_empty() && changed {
                    once(&mut client).await?;
                }
            }
        }
        Ok(())
    })
}
