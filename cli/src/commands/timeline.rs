//! `dekm timeline`: the picture of a sensor stream assigned by a stream model.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use dekm_cli::timeline::{TimelineWindow, stream_timeline};
use dekm_edge::{Model, StreamSession};

#[derive(Args)]
pub(crate) struct TimelineArgs {
    /// Model trained on a stream (`dekm train --window`).
    #[arg(long)]
    model: PathBuf,
    /// The recording (CSV with a header naming the model's channels, or `.npy`).
    #[arg(long)]
    recording: PathBuf,
    /// The JSON lines `dekm-edge assign --stream` wrote for this recording; without them the
    /// recording is assigned here, reading by reading, as the device does.
    #[arg(long)]
    assignments: Option<PathBuf>,
    /// Picture to write (PNG).
    #[arg(long)]
    out: PathBuf,
}

/// Values per window a timeline can assign itself (as `dekm-edge`).
const CAPACITY: usize = 16 * 1024;

pub(crate) fn run(args: &TimelineArgs) -> Result<()> {
    let parts = dekm_edge::file::read_parts(&args.model)?;
    let model = Model::from_parts(&parts).with_context(|| args.model.display().to_string())?;
    let Some(spec) = model.meta().stream.clone() else {
        bail!(
            "{}: not a stream model (train it with --window on a recording)",
            args.model.display()
        );
    };
    let rec = dekm_data::read_recording(&args.recording)?;
    if rec.channels != spec.channels && !args.recording.to_string_lossy().ends_with(".npy") {
        bail!(
            "{}: the recording's channels {:?} are not the model's {:?}",
            args.recording.display(),
            rec.channels,
            spec.channels
        );
    }
    let windows = match &args.assignments {
        Some(path) => read_assignments(path)?,
        None => {
            let mut session = StreamSession::<'_, CAPACITY>::new(&model)?;
            let mut out = Vec::new();
            for r in rec.values.chunks_exact(rec.channels.len()) {
                if let Some(w) = session.push(r)? {
                    out.push(TimelineWindow {
                        start: w.start,
                        cluster: w.assignment.cluster,
                        outlier: w.assignment.outlier,
                    });
                }
            }
            out
        }
    };
    stream_timeline(
        &args.out,
        &rec.channels,
        &rec.values,
        &windows,
        spec.hop,
        model.k(),
    )?;
    let flagged = windows.iter().filter(|w| w.outlier).count();
    println!(
        "wrote {}: {} readings, {} windows, {flagged} flagged",
        args.out.display(),
        rec.len(),
        windows.len()
    );
    Ok(())
}

/// The window lines of `dekm-edge assign --stream` output (error lines are skipped).
fn read_assignments(path: &std::path::Path) -> Result<Vec<TimelineWindow>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {} is not JSON", path.display(), i + 1))?;
        if v.get("error").is_some() {
            continue;
        }
        let field = |name: &str| {
            v.get(name)
                .cloned()
                .with_context(|| format!("{}: line {} has no \"{name}\"", path.display(), i + 1))
        };
        out.push(TimelineWindow {
            start: serde_json::from_value(field("start")?)?,
            cluster: serde_json::from_value(field("cluster")?)?,
            outlier: serde_json::from_value(field("outlier")?)?,
        });
    }
    Ok(out)
}
