//! A sensor recording end to end: `--window`/`--hop` training on a CSV recording, the stream
//! contract in the export, calibration on the held-out end of the recording, and the edge
//! runtime's reading-by-reading session agreeing with the trainer's windows; and the real
//! Daphnet stream when `../shared/data` is present.

mod common;

use std::path::Path;

use dekm_edge::{Model, StreamSession};
use dekm_trainer::data::{DataSource, LoadOptions, Windowing, load};
use dekm_trainer::export::read_model;
use dekm_trainer::model::SeriesEncoder;
use dekm_trainer::pipeline::{assign, train_and_export};
use dekm_trainer::train::{RunOptions, TrainConfig};

/// Three regimes of a 3-channel machine, 150 readings each, cycling: each channel a sine of
/// the regime's own level, frequency and amplitude, with a timestamp column first.
fn write_recording(path: &Path, readings: usize) -> Vec<[f32; 3]> {
    let regimes = [
        [(0.0, 0.05, 1.0), (2.0, 0.11, 0.5), (-1.0, 0.02, 2.0)],
        [(3.0, 0.21, 0.5), (-2.0, 0.03, 1.5), (1.0, 0.13, 0.3)],
        [(-3.0, 0.07, 2.0), (0.0, 0.17, 1.0), (4.0, 0.05, 0.5)],
    ];
    let mut text = String::from("timestamp,x,y,z\n");
    let mut values = Vec::new();
    for t in 0..readings {
        let regime = &regimes[(t / 150) % 3];
        let r: [f32; 3] = std::array::from_fn(|c| {
            let (level, freq, amp) = regime[c];
            level + amp * (freq * t as f32).sin() + 0.05 * ((t * 7 + c * 13) % 11) as f32 / 11.0
        });
        text += &format!("{t},{},{},{}\n", r[0], r[1], r[2]);
        values.push(r);
    }
    std::fs::write(path, text).unwrap();
    values
}

#[test]
fn a_recording_trains_by_window_and_streams_reading_by_reading() {
    for series_encoder in [SeriesEncoder::Dense, SeriesEncoder::Conv1d] {
        trains_by_window_and_streams(series_encoder);
    }
}

fn trains_by_window_and_streams(series_encoder: SeriesEncoder) {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("machine.csv");
    let readings = write_recording(&rec, 2700);
    let opts = LoadOptions {
        windowing: Some(Windowing {
            window: 30,
            hop: 10,
        }),
        ..Default::default()
    };
    let ds = load(&DataSource::Csv(rec.clone()), &opts).unwrap();
    assert_eq!(ds.len(), (2700 - 30) / 10 + 1);
    let cfg = TrainConfig {
        latent: 4,
        series_encoder,
        ..common::quick_config(3)
    };
    let out = dir.path().join("model");
    let outcome = train_and_export(&ds, &cfg, &RunOptions::default(), &out).unwrap();
    // The last 20% of the windows calibrate; the two windows before them share readings
    // with the first held-out one and are dropped.
    let held = ds.len() / 5;
    assert_eq!(outcome.meta.samples, ds.len() - held - 2);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["calibration_samples"], held);
    let stream = outcome.meta.stream.clone().unwrap();
    assert_eq!((stream.window, stream.hop), (30, 10));
    assert_eq!(stream.channels, ["x", "y", "z"]);

    // The device: readings one at a time; each window it assigns is the trainer's window.
    let loaded = read_model(&out).unwrap();
    let trainer_side = assign(&loaded, &ds).unwrap();
    let parts = dekm_edge::file::read_parts(&out).unwrap();
    let model = Model::from_parts(&parts).unwrap();
    assert_eq!(model.meta().stream.as_ref(), Some(&stream));
    let mut session = StreamSession::<'_, 128>::new(&model).unwrap();
    let mut windows = 0;
    for r in &readings {
        if let Some(w) = session.push(r).unwrap() {
            let i = (w.start / 10) as usize;
            let what = format!("{series_encoder:?}: window {i}");
            assert_eq!(w.assignment.cluster, trainer_side[i].cluster, "{what}");
            assert_eq!(w.assignment.outlier, trainer_side[i].outlier, "{what}");
            windows += 1;
        }
    }
    assert_eq!(windows, ds.len());
    // Regimes are what the windows group by: most windows inside one regime agree.
    let m = outcome.meta.metrics;
    assert!(
        m.is_none(),
        "a recording without a label column has no metrics"
    );
    let mut by_regime = [[0usize; 3]; 3];
    for (i, a) in trainer_side.iter().enumerate() {
        let (s, e) = (i * 10, i * 10 + 29);
        if s / 150 == e / 150 {
            by_regime[(s / 150) % 3][a.cluster as usize] += 1;
        }
    }
    let agree: usize = by_regime.iter().map(|r| r.iter().max().unwrap()).sum();
    let total: usize = by_regime.iter().flatten().sum();
    assert!(
        agree as f64 >= 0.9 * total as f64,
        "{series_encoder:?}: windows within one regime split across clusters: {by_regime:?}"
    );
}

#[test]
fn bad_recordings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("short.csv");
    write_recording(&rec, 20);
    let opts = |window| LoadOptions {
        windowing: Some(Windowing { window, hop: 1 }),
        ..Default::default()
    };
    let err = load(&DataSource::Csv(rec.clone()), &opts(30)).unwrap_err();
    assert!(
        err.to_string()
            .contains("20 readings are shorter than one window of 30"),
        "{err}"
    );
    std::fs::write(&rec, "x,y\n1,2\n3,oops\n").unwrap();
    let err = load(&DataSource::Csv(rec.clone()), &opts(1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("line 3, column 2: 'oops' is not a number"),
        "{err}"
    );
    let err = load(&DataSource::Synthetic, &opts(4)).unwrap_err();
    assert!(
        err.to_string().contains("cannot be cut into windows"),
        "{err}"
    );
}

/// Daphnet: train on the first 4,800 readings (75 s), stream the other 2,240 through the edge
/// session; every window is assigned and the stream model carries the nine channel names.
#[test]
fn daphnet_trains_on_the_start_and_streams_the_rest() {
    let Some(dir) = common::data_dir() else {
        eprintln!("SKIPPED: no data directory (DEKM_DATA or ../shared/data)");
        return;
    };
    let path = dir.join("sensors/daphnet/S06R02E0.csv");
    if !path.is_file() {
        eprintln!("SKIPPED: {} is absent", path.display());
        return;
    }
    let rec = dekm_data::read_recording(&path).unwrap();
    assert_eq!((rec.len(), rec.channels.len()), (7040, 9));
    let (first, rest) = rec.split_at(4800);
    let tmp = tempfile::tempdir().unwrap();
    let train_csv = tmp.path().join("train.csv");
    let mut text = format!("{}\n", rec.channels.join(","));
    for r in first.values.chunks_exact(9) {
        let row: Vec<String> = r.iter().map(f32::to_string).collect();
        text += &row.join(",");
        text.push('\n');
    }
    std::fs::write(&train_csv, text).unwrap();
    let opts = LoadOptions {
        windowing: Some(Windowing {
            window: 64,
            hop: 32,
        }),
        ..Default::default()
    };
    let ds = load(&DataSource::Csv(train_csv), &opts).unwrap();
    let cfg = TrainConfig {
        k: 4,
        ..common::quick_config(4)
    };
    let out = tmp.path().join("model");
    train_and_export(&ds, &cfg, &RunOptions::default(), &out).unwrap();
    let model = Model::from_parts(&dekm_edge::file::read_parts(&out).unwrap()).unwrap();
    let mut session = StreamSession::<'_, 1024>::new(&model).unwrap();
    let mut windows = 0;
    for r in rest.values.chunks_exact(9) {
        windows += usize::from(session.push(r).unwrap().is_some());
    }
    assert_eq!(windows, (2240 - 64) / 32 + 1);
}
