//! Vector data on the default path: a short feature vector is clustered on the input itself
//! (a mixture whose covariance the BIC picks), and the exported model assigns as it trained.

use dekm_cluster::gmm::Covariance;
use dekm_cluster::{Fit, Points};
use dekm_trainer::data::{Dataset, SampleShape};
use dekm_trainer::export::read_model;
use dekm_trainer::kmeans::KMeansConfig;
use dekm_trainer::metrics::evaluate;
use dekm_trainer::pipeline::{assign, train_and_export};
use dekm_trainer::train::{RunOptions, Start, TrainConfig};

/// Three clusters of unequal spread in 4 features (two carry them, two are noise): a broad
/// one (sd 2) 4.5 from a tight one (sd 0.3), a second tight one 3 away across. The k-means
/// boundary, halfway between centres, hands the broad cluster's near side to the tight one; a
/// mixture with a variance per cluster does not.
fn unequal(n: usize) -> Dataset {
    let mut state = 7u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut normal = move || {
        let (u, v) = (uniform(), uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let mut xs = Vec::with_capacity(n * 4);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % 3;
        let (sd, x, y) = [(0.3, 0.0, 0.0), (2.0, 4.5, 0.0), (0.3, 0.0, 3.0)][c];
        xs.extend([x + sd * normal(), y + sd * normal(), normal(), normal()]);
        labels.push(c as u32);
    }
    Dataset {
        name: "unequal".into(),
        shape: SampleShape::Vector(4),
        xs,
        labels: Some(labels),
        anomalies: None,
        label_names: Vec::new(),
        text: None,
        stream: None,
    }
}

#[test]
fn short_vectors_start_from_a_mixture_on_the_input_and_the_export_keeps_it() {
    let ds = unequal(450);
    let truth = ds.labels.clone().unwrap();
    // What k-means on the standardised input gets (scikit-learn's StandardScaler, each feature
    // on its own): the partition the default must beat.
    let flat = ds
        .normalized(&dekm_shared::Normalizer::standardize(&ds.xs, 4))
        .unwrap();
    let km = KMeansConfig {
        restarts: 10,
        ..KMeansConfig::new(3)
    }
    .fit(&Points::new(&flat, 4).unwrap())
    .unwrap();
    let kmeans_acc = evaluate(&km.labels, &truth).acc;
    assert!(
        kmeans_acc < 0.8,
        "k-means on the input already gets {kmeans_acc}"
    );

    let cfg = TrainConfig {
        k: 3,
        epochs: 20,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = train_and_export(&ds, &cfg, &RunOptions::default(), dir.path()).unwrap();
    assert_eq!(out.trained.config.start, Start::Input);
    let mixture = out
        .trained
        .history
        .mixture
        .as_ref()
        .expect("the input start's mixture");
    let full = mixture
        .bic_full
        .expect("every cluster outnumbers 4 features");
    let chosen_lower = match mixture.covariance {
        Covariance::Full => full <= mixture.bic_diagonal,
        Covariance::Diagonal => mixture.bic_diagonal <= full,
    };
    assert!(chosen_lower, "{mixture:?}");
    let acc = out.meta.metrics.expect("labelled").acc;
    assert!(
        acc > 0.95,
        "default ACC {acc}, k-means on the input {kmeans_acc}"
    );

    // config.json names the start auto stood for; the device assigns as training ended.
    let saved = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(saved.contains("\"start\": \"input\""), "{saved}");
    let model = read_model(dir.path()).unwrap();
    let assigned: Vec<u32> = assign(&model, &ds)
        .unwrap()
        .iter()
        .map(|a| a.cluster)
        .collect();
    assert_eq!(assigned, out.calibration.labels);
}
