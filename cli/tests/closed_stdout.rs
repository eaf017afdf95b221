//! A reader that goes away (`dekm train ... | head -1`) ends the command quietly by `SIGPIPE`,
//! as other command-line tools end, not with a panic about a broken pipe; the model is saved
//! all the same, since it is written before the summary is printed.

#![cfg(unix)]

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_train_by_sigpipe_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(f, "a,b,label").unwrap();
    for i in 0..90 {
        let c = i % 3;
        let jitter = (i as f32 * 0.37).sin();
        writeln!(f, "{},{},{c}", 4.0 * c as f32 + jitter, jitter - c as f32).unwrap();
    }
    drop(f);
    let model = dir.path().join("model");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dekm"))
        .args(["--quiet", "train", "--label-col", "last", "--k", "3"])
        .arg("--dataset")
        .arg(format!("csv:{}", csv.display()))
        .arg("--out")
        .arg(&model)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the command prints its summary (after training).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(13),
        "expected SIGPIPE, got {:?}: {stderr}",
        out.status
    );
    assert!(
        model.join("config.json").exists(),
        "the model is saved first"
    );
}
