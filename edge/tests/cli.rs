//! The `dekm-edge` binary against the library, on hand-made models (no trainer needed): JSON
//! lines equal to `Session::assign` and, with `--stream`, to `StreamSession::push`; bad rows
//! and readings per `--on-error`, bundles, info and bad models.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use dekm_edge::{Model, StreamSession, file::read_parts};
use dekm_shared::{
    EncoderSpec, FORMAT_VERSION, ImageShape, ModelMeta, OutlierScore, StreamSpec, names,
};

const LEVELS: [f32; 9] = [0.5, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 1.0];
const SIDE: usize = 12;

fn rng(seed: u32) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }
}

/// A convolutional model for 1x12x12 images, k = 3, latent 4, random weights, every cluster's
/// outlier threshold `threshold` (the 0.99 level of a linear calibration table).
fn write_model(dir: &Path, threshold: f32) {
    let spec = EncoderSpec::paper_conv(
        ImageShape {
            channels: 1,
            height: SIDE,
            width: SIDE,
        },
        4,
    );
    write_spec_model(dir, spec, None, threshold);
}

/// A model of `spec` (latent 4, k = 3) with random weights, cutting streams as `stream` says.
fn write_spec_model(dir: &Path, spec: EncoderSpec, stream: Option<StreamSpec>, threshold: f32) {
    let (k, d) = (3, 4);
    let mut next = rng(7);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for t in names::expected_tensors(&spec, k, LEVELS.len(), OutlierScore::Distance).unwrap() {
        let n: usize = t.shape.iter().product();
        let data: Vec<f32> = match t.name.as_str() {
            names::V => (0..d * d)
                .map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 })
                .collect(),
            names::EIGENVALUES => vec![1.0; n],
            names::QUANTILE_LEVELS => LEVELS.to_vec(),
            names::DISTANCE_QUANTILES => (0..k)
                .flat_map(|_| LEVELS.iter().map(|l| threshold * l / 0.99))
                .collect(),
            names::THRESHOLDS => vec![threshold; k],
            names::INPUT_OFFSET => vec![0.0; n],
            names::INPUT_SCALE => vec![1.0 / 255.0; n],
            _ => (0..n).map(|_| next() * 0.4).collect(),
        };
        tensors.push((t.name, t.shape, data));
    }
    let meta = ModelMeta {
        format_version: FORMAT_VERSION,
        encoder: spec,
        k,
        threshold_quantile: 0.99,
        outlier_score: OutlierScore::Distance,
        stream,
        spectrum: None,
        weights: dekm_shared::Weights::F32,
        embedder: None,
        dataset: "hand-made".into(),
        samples: 0,
        seed: 7,
        metrics: None,
        created_unix: 0,
        trainer_version: "test".into(),
    };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .unwrap();
            (name.clone(), v)
        })
        .collect();
    let header = HashMap::from([
        (names::FORMAT_KEY.to_string(), FORMAT_VERSION.to_string()),
        (names::META_KEY.to_string(), meta.to_json()),
    ]);
    let out = safetensors::serialize(views, Some(header)).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(names::MODEL_FILE), out).unwrap();
}

/// `n` images as an IDX file, pixel values spread over 0..=255.
fn write_idx(path: &Path, n: usize) -> Vec<Vec<f32>> {
    let mut next = rng(3);
    let mut b = vec![0, 0, 8, 3];
    for d in [n, SIDE, SIDE] {
        b.extend((d as u32).to_be_bytes());
    }
    let mut samples = Vec::new();
    for _ in 0..n {
        let px: Vec<u8> = (0..SIDE * SIDE)
            .map(|_| ((next() + 0.5) * 255.0) as u8)
            .collect();
        samples.push(px.iter().map(|&p| f32::from(p)).collect());
        b.extend(px);
    }
    std::fs::write(path, b).unwrap();
    samples
}

/// The `dekm-edge` binary as a command. Built for another architecture (aarch64 under
/// `scripts/edge-targets.sh`), it runs through the emulator `DEKM_EDGE_RUNNER` names
/// (`qemu-aarch64 -L /usr/aarch64-linux-gnu`): the test itself runs under cargo's runner, but a
/// process it starts does not.
fn edge_command() -> Command {
    let bin = env!("CARGO_BIN_EXE_dekm-edge");
    let runner = std::env::var("DEKM_EDGE_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut c = Command::new(emulator);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

fn edge(args: &[&str]) -> Output {
    edge_command().args(args).output().unwrap()
}

fn lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn assign_writes_what_the_library_computes_and_bundles_agree() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    write_model(&model_dir, 1.0);
    let images = dir.path().join("images-idx3-ubyte");
    let samples = write_idx(&images, 60);
    // Thresholds at the median distance, so both outlier outcomes occur.
    let model = Model::from_parts(&read_parts(&model_dir).unwrap()).unwrap();
    let mut session = model.session();
    let mut dist: Vec<f32> = samples
        .iter()
        .map(|x| session.assign(x).unwrap().distance)
        .collect();
    dist.sort_by(f32::total_cmp);
    write_model(&model_dir, dist[dist.len() / 2]);

    let out = edge(&["assign", "--model", s(&model_dir), "--input", s(&images)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = lines(&out);
    assert_eq!(rows.len(), samples.len());
    let model = Model::from_parts(&read_parts(&model_dir).unwrap()).unwrap();
    let mut session = model.session();
    let mut outliers = 0;
    for (i, (row, x)) in rows.iter().zip(&samples).enumerate() {
        let a = session.assign(x).unwrap();
        assert_eq!(row["index"], i);
        assert_eq!(row["cluster"], a.cluster);
        assert_eq!(row["outlier"], a.outlier);
        assert!((row["distance"].as_f64().unwrap() - f64::from(a.distance)).abs() < 1e-6);
        assert!((row["margin"].as_f64().unwrap() - f64::from(a.margin)).abs() < 1e-6);
        outliers += usize::from(a.outlier);
    }
    assert!(
        outliers > 0 && outliers < samples.len(),
        "fixture must exercise both outlier outcomes ({outliers} of {})",
        samples.len()
    );

    let bundle = dir.path().join("model.dekm");
    let packed = edge(&["pack", "--model", s(&model_dir), "--out", s(&bundle)]);
    assert!(
        packed.status.success(),
        "{}",
        String::from_utf8_lossy(&packed.stderr)
    );
    let again = edge(&["assign", "--model", s(&bundle), "--input", s(&images)]);
    assert_eq!(
        again.stdout, out.stdout,
        "bundle assigns exactly like the export"
    );

    let info = edge(&["info", "--model", s(&bundle)]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["kind"], "bundle");
    assert_eq!(info["meta"]["k"], 3);
    assert_eq!(info["input_len"], SIDE * SIDE);

    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    let bad = edge(&["assign", "--model", s(&bundle), "--input", s(&images)]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    std::fs::write(&bundle, &bytes[..bytes.len() / 2]).unwrap();
    let err = String::from_utf8_lossy(&edge(&["info", "--model", s(&bundle)]).stderr).to_string();
    assert!(err.contains("wrong length"), "{err}");
}

#[test]
fn bad_rows_are_skipped_emitted_or_fatal_and_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    write_model(&model_dir, 1.0);
    let row = |v: f32| vec![v.to_string(); SIDE * SIDE].join(",");
    let csv = dir.path().join("x.csv");
    std::fs::write(
        &csv,
        format!(
            "{}\n1,2,3\n{}\n{}\n",
            row(10.0),
            row(f32::NAN).replace("NaN", "nan"),
            row(200.0)
        ),
    )
    .unwrap();
    let base = ["assign", "--model", s(&model_dir), "--input", s(&csv)];

    let skip = edge(&base);
    assert!(skip.status.success());
    assert_eq!(
        lines(&skip)
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 3]
    );
    let err = String::from_utf8_lossy(&skip.stderr);
    assert!(
        err.contains("sample 1: ") && err.contains("line 2 has 3 fields"),
        "{err}"
    );
    assert!(
        err.contains("sample 2: ") && err.contains("NaN or infinite"),
        "{err}"
    );

    let emit = edge(&[&base[..], &["--on-error", "emit"]].concat());
    let rows = lines(&emit);
    assert_eq!(rows.len(), 4);
    assert!(rows[1]["error"].as_str().unwrap().contains("3 fields"));
    assert!(rows[2]["error"].is_string());

    let fail = edge(&[&base[..], &["--on-error", "fail"]].concat());
    assert_eq!(fail.status.code(), Some(2));
    assert_eq!(lines(&fail).len(), 1);

    let summary = edge(&[&base[..], &["--summary", "--quiet"]].concat());
    assert!(summary.stdout.is_empty());
    let err = String::from_utf8_lossy(&summary.stderr);
    assert!(err.contains("assigned 2 samples, rejected 2"), "{err}");

    let q = edge(&[&base[..], &["--threshold-quantile", "0.3"]].concat());
    assert_eq!(q.status.code(), Some(1));
    let err = String::from_utf8_lossy(&q.stderr);
    assert!(err.contains("outside the calibrated range"), "{err}");

    // Rows are assigned in batches: a bad one in the middle of the second batch still stops
    // `fail` right after the rows before it, and `emit` keeps every row in its place.
    let long = dir.path().join("long.csv");
    let rows: Vec<String> = (0..40)
        .map(|i| {
            if i == 20 {
                row(f32::INFINITY)
            } else {
                row(i as f32)
            }
        })
        .collect();
    std::fs::write(&long, rows.join("\n") + "\n").unwrap();
    let long_base = ["assign", "--model", s(&model_dir), "--input", s(&long)];
    let fail = edge(&[&long_base[..], &["--on-error", "fail"]].concat());
    assert_eq!(fail.status.code(), Some(2));
    let indices = |o: &Output| {
        lines(o)
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(indices(&fail), (0..20).collect::<Vec<_>>());
    let emit = edge(&[&long_base[..], &["--on-error", "emit"]].concat());
    assert_eq!(indices(&emit), (0..40).collect::<Vec<_>>());
    let error = lines(&emit)[20]["error"].as_str().unwrap().to_string();
    assert!(error.contains("NaN or infinite"), "{error}");
    assert!(lines(&emit)[21]["cluster"].is_u64());

    let wrong = dir.path().join("wrong.csv");
    std::fs::write(&wrong, "1,2,3\n").unwrap();
    let w = edge(&["assign", "--model", s(&model_dir), "--input", s(&wrong)]);
    let err = String::from_utf8_lossy(&w.stderr);
    assert!(err.contains("rows have 3 values, expected 144"), "{err}");
}

/// `dekm-edge assign` on a fresh model in `model_dir`, reading raw f32 samples from a pipe,
/// its output and errors piped too.
fn assign_from_stdin(model_dir: &Path) -> std::process::Child {
    write_model(model_dir, 1.0);
    edge_command()
        .args(["assign", "--model", s(model_dir)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn raw_f32_on_stdin_and_missing_models() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    let mut child = assign_from_stdin(&model_dir);
    let sample: Vec<u8> = (0..SIDE * SIDE * 2)
        .flat_map(|i| (i as f32).to_le_bytes())
        .chain([0u8; 6])
        .collect();
    child.stdin.take().unwrap().write_all(&sample).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(lines(&out).len(), 2);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a partial last sample is an error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated"), "{err}");

    let missing = edge(&["info", "--model", s(&dir.path().join("nope"))]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));
    std::fs::write(model_dir.join(names::MODEL_FILE), b"garbage").unwrap();
    let garbage = edge(&["info", "--model", s(&model_dir)]);
    let err = String::from_utf8_lossy(&garbage.stderr);
    assert!(err.contains("not a valid safetensors file"), "{err}");
}

/// A reader of stdout that goes away (`dekm-edge assign ... | head`) ends the command quietly
/// with the shell's status for a closed pipe (141), not with an error message.
#[test]
fn a_closed_stdout_ends_assign_quietly() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    let mut child = assign_from_stdin(&model_dir);
    drop(child.stdout.take());
    // 5,000 samples: far more lines than the pipe and the output buffer hold.
    let samples: Vec<u8> = (0..SIDE * SIDE * 5000)
        .flat_map(|i| ((i % 255) as f32).to_le_bytes())
        .collect();
    // The command may end before it has read them all; a write error here is expected then.
    let _ = child.stdin.take().unwrap().write_all(&samples);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(err.is_empty(), "{err}");
}

/// A stream model (channels a, b; window 4, hop 2) and a recording of 20 readings with a
/// timestamp column, a bad reading at line 12 and an anomaly column the runtime ignores.
fn stream_case(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<[f32; 2]>) {
    let model_dir = dir.join("stream-model");
    let spec = StreamSpec {
        channels: vec!["a".into(), "b".into()],
        window: 4,
        hop: 2,
    };
    write_spec_model(&model_dir, EncoderSpec::paper_dense(8, 4), Some(spec), 0.5);
    let mut text = String::from("timestamp,a,b,is_anomaly\n");
    let mut good = Vec::new();
    for t in 0..21 {
        if t == 10 {
            text += "t10,1.0,nan,0\n";
            continue;
        }
        let r = [(t as f32 * 0.7).sin() * 100.0, t as f32 * 10.0];
        text += &format!("t{t},{},{},0\n", r[0], r[1]);
        good.push(r);
    }
    let rec = dir.join("rec.csv");
    std::fs::write(&rec, text).unwrap();
    (model_dir, rec, good)
}

#[test]
fn stream_assigns_every_hop_like_the_library_and_names_bad_readings() {
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, rec, good) = stream_case(dir.path());
    let out = edge(&[
        "assign",
        "--model",
        s(&model_dir),
        "--stream",
        "--input",
        s(&rec),
        "--on-error",
        "emit",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = lines(&out);
    let model = Model::from_parts(&read_parts(&model_dir).unwrap()).unwrap();
    let mut session = StreamSession::<'_, 64>::new(&model).unwrap();
    let mut want = Vec::new();
    for r in &good {
        if let Some(w) = session.push(r).unwrap() {
            want.push(w);
        }
    }
    // The bad reading (line 12 of the file) is reported where it came and loses nothing.
    let errors: Vec<&serde_json::Value> = got.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(errors.len(), 1);
    let msg = errors[0]["error"].as_str().unwrap();
    assert!(
        msg.contains("line 12") && msg.contains("NaN or infinite"),
        "{msg}"
    );
    let windows: Vec<&serde_json::Value> =
        got.iter().filter(|l| l.get("start").is_some()).collect();
    assert_eq!(windows.len(), want.len());
    assert_eq!(want.len(), 9, "20 good readings: windows at 4, 6, ..., 20");
    for (line, w) in windows.iter().zip(&want) {
        assert_eq!(line["start"], w.start);
        assert_eq!(line["cluster"], w.assignment.cluster);
        assert_eq!(line["outlier"], w.assignment.outlier);
        assert!((line["score"].as_f64().unwrap() - f64::from(w.assignment.score)).abs() < 1e-5);
    }
    // The window's first reading's timestamp: accepted readings 0..10 are t0..t9, then t11...
    assert_eq!(windows[0]["timestamp"], "t0");
    assert_eq!(
        windows[5]["timestamp"], "t11",
        "start 10 is the reading after the bad one"
    );
}

#[test]
fn stream_refuses_other_channels_plain_models_and_reads_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, rec, _) = stream_case(dir.path());
    let swapped = dir.path().join("swapped.csv");
    std::fs::write(&swapped, "timestamp,b,a\nt0,1,2\n").unwrap();
    let out = edge(&[
        "assign",
        "--model",
        s(&model_dir),
        "--stream",
        "--input",
        s(&swapped),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not the model's"),
        "{err}"
    );

    let plain = dir.path().join("plain");
    write_model(&plain, 1.0);
    let out = edge(&[
        "assign",
        "--model",
        s(&plain),
        "--stream",
        "--input",
        s(&rec),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not trained on a stream"), "{err}");

    let mut child = edge_command()
        .args(["assign", "--model", s(&model_dir), "--stream", "--summary"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::fs::read(&rec).unwrap();
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(lines(&out).len(), 9);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("assigned 9 samples, rejected 1"), "{err}");
}
