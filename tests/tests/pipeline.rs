//! The whole pipeline: reproducibility, resume, data errors, and real MNIST when it is present.

mod common;

use dekm_trainer::augment::Augment;
use dekm_trainer::pipeline::train_and_export;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dekm_trainer::train::{Observer, Progress, RunOptions, Start, TrainConfig, TrainError, train};

#[test]
fn same_seed_same_assignments() {
    let ds = common::synthetic(4, 500, 3);
    let cfg = common::quick_config(4);
    let a = train(&ds, &cfg, &RunOptions::default()).unwrap();
    let b = train(&ds, &cfg, &RunOptions::default()).unwrap();
    assert_eq!(a.kmeans.labels, b.kmeans.labels);
    // Wall-clock fields differ between identical runs; the curves must not.
    assert_eq!(a.history.pretrain_loss, b.history.pretrain_loss);
    assert_eq!(a.history.iterations, b.history.iterations);
    let c = train(
        &ds,
        &TrainConfig { seed: 12, ..cfg },
        &RunOptions::default(),
    )
    .unwrap();
    assert_ne!(
        a.history.pretrain_loss, c.history.pretrain_loss,
        "seed changes the run"
    );
}

#[test]
fn synthetic_regimes_are_recovered() {
    let ds = common::synthetic(4, 800, 9);
    let cfg = TrainConfig {
        epochs: 8,
        ..common::quick_config(4)
    };
    let dir = tempfile::tempdir().unwrap();
    let out = train_and_export(&ds, &cfg, &RunOptions::default(), dir.path()).unwrap();
    let m = out.meta.metrics.expect("synthetic data has labels");
    assert!(m.acc > 0.95, "ACC {m:?}");
}

#[test]
fn augmented_training_is_seeded_and_still_separates_the_shapes() {
    let ds = common::images(600);
    let plain = TrainConfig {
        epochs: 4,
        ..common::quick_config(3)
    };
    let jittered = TrainConfig {
        augment: Augment::DEC_DA,
        ..plain.clone()
    };
    let a = train(&ds, &jittered, &RunOptions::default()).unwrap();
    let b = train(&ds, &jittered, &RunOptions::default()).unwrap();
    assert_eq!(a.history.pretrain_loss, b.history.pretrain_loss);
    assert_eq!(a.kmeans.labels, b.kmeans.labels);
    // The jitter is applied: the reconstruction task changes, and so does every epoch's loss.
    let p = train(&ds, &plain, &RunOptions::default()).unwrap();
    for (e, (j, q)) in a
        .history
        .pretrain_loss
        .iter()
        .zip(&p.history.pretrain_loss)
        .enumerate()
    {
        assert_ne!(j, q, "epoch {}", e + 1);
    }
    let m = a.history.iterations.last().and_then(|i| i.metrics).unwrap();
    assert!(
        m.acc > 0.9,
        "bar, square and cross survive small shifts and turns: {m:?}"
    );
}

/// The state file of the checkpoint under `out`: in the generation `CURRENT` names.
fn checkpoint_state(out: &std::path::Path) -> std::path::PathBuf {
    let dir = out.join("checkpoint");
    let current = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(current.trim()).join("state.json")
}

#[test]
fn resume_continues_an_interrupted_run() {
    let ds = common::synthetic(3, 400, 4);
    let dir = tempfile::tempdir().unwrap();
    let opts = common::resuming(dir.path());
    // "Interrupted" after 2 of 4 epochs, before any DEKM iteration.
    let first = TrainConfig {
        epochs: 2,
        max_iter: 0,
        ..common::quick_config(3)
    };
    let a = train(&ds, &first, &opts).unwrap();
    assert!(checkpoint_state(dir.path()).exists());
    let full = TrainConfig {
        epochs: 4,
        ..first.clone()
    };
    let b = train(&ds, &full, &opts).unwrap();
    assert_eq!(b.history.pretrain_loss.len(), 4);
    assert_eq!(b.history.pretrain_loss[..2], a.history.pretrain_loss[..]);
    // Weights, optimizer moments and shuffles are all restored: the resumed run is the
    // uninterrupted run.
    let c = train(&ds, &full, &RunOptions::default()).unwrap();
    assert_eq!(b.history.pretrain_loss, c.history.pretrain_loss);
    assert_eq!(b.kmeans.labels, c.kmeans.labels);
    // A different data set must not pick up this checkpoint.
    let other = common::synthetic(3, 300, 4);
    let err = train(&other, &full, &opts)
        .err()
        .expect("mismatched checkpoint");
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err}");
}

/// Cancels a run once its first DEKM iteration has been checkpointed.
#[derive(Default)]
struct StopAfterIteration1(AtomicBool);

impl Observer for StopAfterIteration1 {
    fn progress(&self, step: &Progress) {
        if matches!(step, Progress::Iteration { iteration: 1, .. }) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn a_manifold_start_is_recorded_held_and_resumed_exactly() {
    let ds = common::synthetic(4, 500, 3);
    // Tolerance 0: the start stays held until the last iteration, whatever k-means says.
    // `auto`, the default, is the manifold start for DEKM on 500 samples in 4 clusters.
    let cfg = TrainConfig {
        start: Start::Auto,
        tol: 0.0,
        ..common::quick_config(4)
    };
    let out = tempfile::tempdir().unwrap();
    let exported = train_and_export(&ds, &cfg, &RunOptions::default(), out.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["start"], "manifold",
        "config.json names what auto stood for"
    );
    let table = exported.results_table("DEKM").expect("labelled data");
    assert_eq!(
        table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next())
            .collect::<Vec<_>>(),
        [Some("AE+k-means"), Some("N2D"), Some("DEKM")],
        "{table}"
    );
    let whole = exported.trained;
    let start = whole.history.start.expect("synthetic data has labels");
    assert!(start.acc > 0.9, "the regimes are well apart: {start:?}");
    let released = whole
        .history
        .iterations
        .last()
        .and_then(|it| it.metrics)
        .expect("labelled iterations");
    assert!(
        released.acc >= start.acc - 0.01,
        "k-means takes over from the held partition without leaving it: {start:?} -> {released:?}"
    );
    let kmeans = TrainConfig {
        start: Start::Kmeans,
        ..common::quick_config(4)
    };
    assert_eq!(
        train(&ds, &kmeans, &RunOptions::default())
            .unwrap()
            .history
            .start,
        None
    );

    // Interrupted after the first of three iterations, where the start is still held, then
    // resumed: the same run as the whole one.
    let dir = tempfile::tempdir().unwrap();
    let opts = |observer: Option<Arc<dyn Observer>>| RunOptions {
        checkpoint: Some(dir.path().join("checkpoint")),
        resume: true,
        observer,
    };
    let err = train(
        &ds,
        &cfg,
        &opts(Some(Arc::new(StopAfterIteration1::default()))),
    )
    .err()
    .expect("cancelled");
    assert!(matches!(err, TrainError::Cancelled), "{err}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(checkpoint_state(dir.path())).unwrap()).unwrap();
    let held = &state["phase"]["Dekm"]["held"]["labels"];
    assert_eq!(
        held.as_array().map(Vec::len),
        Some(ds.len()),
        "the checkpoint after iteration 1 keeps the held labels"
    );
    let resumed = train(&ds, &cfg, &opts(None)).unwrap();
    assert_eq!(resumed.history.iterations, whole.history.iterations);
    assert_eq!(resumed.kmeans.labels, whole.kmeans.labels);
}

#[test]
fn k_larger_than_data_is_a_clear_error() {
    let ds = common::synthetic(3, 20, 1);
    let err = train(
        &ds,
        &TrainConfig {
            k: 21,
            ..common::quick_config(3)
        },
        &RunOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("k = 21 but the data set has 20 samples"),
        "{err}"
    );
}

/// DEKM on a 2,000-image slice of real MNIST. Needs the IDX files; without them the test says so
/// and checks nothing.
#[test]
fn mnist_slice_dekm_beats_minimum_and_baseline() {
    let Some(ds) = common::mnist_slice("mnist_slice_dekm_beats_minimum_and_baseline", 2000) else {
        return;
    };
    let cfg = TrainConfig {
        k: 10,
        epochs: MNIST_EPOCHS,
        batch_size: 64,
        max_iter: 10,
        steps_per_iter: 30,
        seed: 0,
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let res = train_and_export(&ds, &cfg, &RunOptions::default(), out.path()).unwrap();
    let base = res.trained.baseline.unwrap();
    let dekm = res.meta.metrics.unwrap();
    eprintln!("MNIST 2000: AE+k-means {base:?}, DEKM {dekm:?}");
    assert!(
        dekm.acc >= MNIST_MIN_ACC,
        "DEKM ACC {} < {MNIST_MIN_ACC}",
        dekm.acc
    );
    assert!(
        dekm.acc >= base.acc,
        "DEKM {} ended below AE+k-means {}",
        dekm.acc,
        base.acc
    );
}

/// Pretraining epochs of the MNIST slice test (batch 64: 320 Adam steps).
const MNIST_EPOCHS: usize = 10;
/// Minimum ACC on the slice. With seed 0 and these settings the run measured AE+k-means 0.612 and
/// DEKM 0.673 (docs/RESULTS.md); on 2026-12-01, with the Keras initialisation and the manifold
/// start on the feature map, 0.597 and 0.689. The floor leaves room for floating-point
/// differences across CPUs.
const MNIST_MIN_ACC: f64 = 0.60;

#[test]
fn dec_idec_and_ae_kmeans_share_the_pretrained_start_and_export_their_labels() {
    use dekm_trainer::train::Method;
    let ds = common::synthetic(4, 800, 9);
    let base = TrainConfig {
        epochs: 6,
        max_iter: 4,
        ..common::quick_config(4)
    };
    let mut baselines = Vec::new();
    for method in [Method::AeKmeans, Method::Dec, Method::Idec] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            method,
            ..base.clone()
        };
        let out = train_and_export(&ds, &cfg, &RunOptions::default(), dir.path()).unwrap();
        let t = &out.trained;
        baselines.push(t.baseline);
        let m = out.meta.metrics.unwrap();
        assert!(m.acc > 0.9, "{method:?}: {m:?}");
        // The exported head (nearest centroid) gives the stage's own labels.
        assert_eq!(out.calibration.labels, t.kmeans.labels, "{method:?}");
        match method {
            Method::AeKmeans => assert!(t.history.iterations.is_empty()),
            _ => {
                let its = &t.history.iterations;
                assert!(!its.is_empty() && its.len() <= 4, "{method:?}");
                assert!(its.iter().all(|i| i.loss.is_finite() && i.loss >= 0.0));
            }
        }
    }
    assert!(
        baselines.windows(2).all(|w| w[0] == w[1]),
        "same pretraining: {baselines:?}"
    );
}

const KILL_CHILD_DIR: &str = "DEKM_KILL_CHILD_DIR";
const KILL_TEST: &str = "training_killed_mid_checkpoint_resumes_as_if_never_killed";

/// The run the kill test interrupts: long enough to be killed many times in pretraining and in
/// the DEKM stage, every epoch and iteration checkpointed.
fn kill_run() -> (dekm_trainer::data::Dataset, TrainConfig) {
    let ds = common::synthetic(3, 300, 8);
    let cfg = TrainConfig {
        epochs: 12,
        max_iter: 8,
        tol: 0.0,
        ..common::quick_config(3)
    };
    (ds, cfg)
}

/// Epochs and DEKM iterations the current checkpoint under `out` records, after checking that
/// its weights and optimizer files are whole.
fn checkpoint_progress(out: &std::path::Path) -> usize {
    let state_path = checkpoint_state(out);
    let dir = state_path.parent().unwrap();
    for f in ["weights.safetensors", "optimizer.safetensors"] {
        candle_core::safetensors::load(dir.join(f), &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("{f} of {} is not whole: {e}", dir.display()));
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let phase = &state["phase"];
    match (phase.get("Pretrain"), phase.get("Dekm")) {
        (Some(p), _) => p["epochs_done"].as_u64().unwrap() as usize,
        (_, Some(d)) => 1000 + d["iterations_done"].as_u64().unwrap() as usize,
        _ => panic!("unknown phase {phase}"),
    }
}

#[test]
fn training_killed_mid_checkpoint_resumes_as_if_never_killed() {
    let (ds, cfg) = kill_run();
    if let Some(dir) = std::env::var_os(KILL_CHILD_DIR) {
        // The child: trains (resuming) until it is killed or done.
        train(&ds, &cfg, &common::resuming(std::path::Path::new(&dir))).unwrap();
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let current = out.path().join("checkpoint/CURRENT");
    let generation = || std::fs::read_to_string(&current).unwrap_or_default();
    let (mut last, mut kills) = (0, 0);
    for round in 0..6u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", KILL_TEST, "--nocapture", "--test-threads=1"])
            .env(KILL_CHILD_DIR, out.path())
            .spawn()
            .unwrap();
        // Once the child has committed a checkpoint of its own, kill it a staggered moment
        // later, so the kills land at different points of the next checkpoint's writes.
        let before = generation();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while generation() == before && child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(11 * round));
        kills += usize::from(child.try_wait().unwrap().is_none());
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let progress = checkpoint_progress(out.path());
        assert!(progress > last, "round {round}: from {last} to {progress}");
        eprintln!("round {round}: checkpoint at {progress}");
        last = progress;
    }
    assert!(kills >= 4, "the runs ended before the kills");
    // Finished from the last checkpoint, the run is the run that was never interrupted.
    let resumed = train(&ds, &cfg, &common::resuming(out.path())).unwrap();
    let whole = train(&ds, &cfg, &RunOptions::default()).unwrap();
    assert_eq!(resumed.history.pretrain_loss, whole.history.pretrain_loss);
    assert_eq!(resumed.kmeans.labels, whole.kmeans.labels);
    assert_eq!(resumed.kmeans.centroids, whole.kmeans.centroids);
}
