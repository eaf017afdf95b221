//! `dekm sample` through the binary: a ClusterGAN model draws new samples of a cluster, as a
//! picture grid for images and as CSV for any data; bad requests are clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dekm(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dekm"));
    c.arg("--quiet").args(args);
    for (flag, path) in paths {
        c.arg(flag).arg(path);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_clustergan_model_samples_its_clusters_as_csv_and_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    ok(&dekm(
        &[
            "train",
            "--dataset",
            "synthetic",
            "--synthetic-samples",
            "300",
            "--k",
            "3",
            "--method",
            "clustergan",
            "--epochs",
            "1",
        ],
        &[("--out", &model)],
    ));
    let csv = dir.path().join("s.csv");
    let said = ok(&dekm(
        &["sample", "--cluster", "1", "--n", "5"],
        &[("--model", &model), ("--out", &csv)],
    ));
    assert!(said.contains("cluster 1: code "), "{said}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 6, "a header and five samples");
    assert!(rows[0].starts_with("cluster,x0,"));
    assert!(rows[1..].iter().all(|r| r.starts_with("1,")));
    let width = rows[0].split(',').count();
    assert!(rows[1..].iter().all(|r| r.split(',').count() == width));
    // Every cluster when none is named: five rows each.
    ok(&dekm(
        &["sample", "--n", "5"],
        &[("--model", &model), ("--out", &csv)],
    ));
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 16);

    let png = dir.path().join("s.png");
    let err = failed(&dekm(&["sample"], &[("--model", &model), ("--out", &png)]));
    assert!(err.contains("not images"), "{err}");
    let err = failed(&dekm(
        &["sample", "--cluster", "3"],
        &[("--model", &model), ("--out", &csv)],
    ));
    assert!(err.contains("the model has 3 clusters, 0 to 2"), "{err}");
    let err = failed(&dekm(
        &["sample", "--n", "0"],
        &[("--model", &model), ("--out", &csv)],
    ));
    assert!(err.contains("--n 0"), "{err}");
    let txt = dir.path().join("s.txt");
    let err = failed(&dekm(&["sample"], &[("--model", &model), ("--out", &txt)]));
    assert!(err.contains("a .png or a .csv"), "{err}");
    // A model of another method has no generator.
    let err = failed(&dekm(
        &["sample"],
        &[("--model", dir.path()), ("--out", &csv)],
    ));
    assert!(
        err.contains("only models trained with --method clustergan"),
        "{err}"
    );
    // A damaged description is named, not a panic.
    std::fs::write(model.join("generator.json"), "{\"spec\": 1}").unwrap();
    let err = failed(&dekm(&["sample"], &[("--model", &model), ("--out", &csv)]));
    assert!(err.contains("generator.json"), "{err}");
}

fn data_dir() -> Option<PathBuf> {
    std::env::var_os("DEKM_DATA")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")))
        .filter(|p| p.join("mnist").is_dir())
}

/// Images become a picture grid. Needs the MNIST IDX files; without them the test says so and
/// checks nothing.
#[test]
fn a_clustergan_image_model_draws_a_picture_grid() {
    let Some(data) = data_dir() else {
        eprintln!(
            "SKIPPED a_clustergan_image_model_draws_a_picture_grid: no MNIST under DEKM_DATA or ../shared/data"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    ok(&dekm(
        &[
            "train",
            "--dataset",
            "mnist",
            "--limit",
            "300",
            "--k",
            "4",
            "--method",
            "clustergan",
            "--epochs",
            "1",
        ],
        &[("--data-dir", &data), ("--out", &model)],
    ));
    let png = dir.path().join("grid.png");
    ok(&dekm(
        &["sample", "--n", "6"],
        &[("--model", &model), ("--out", &png)],
    ));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    // Four rows of six 28x28 images at twice their size, two-pixel gaps.
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (2 + 6 * 58, 2 + 4 * 58));
}
