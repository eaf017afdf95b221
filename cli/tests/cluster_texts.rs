//! `dekm cluster` on documents, through the binary: the scores, the texts nearest each
//! cluster's centre, and one PCA picture per method (the recipe's picture of the groups).

use std::process::Command;

#[test]
fn clustering_texts_names_each_group_by_its_texts_and_draws_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let bert = dir.path().join("bert");
    std::fs::create_dir(&bert).unwrap();
    dekm_embed::fixture::write_tiny_bert(&bert, 3).unwrap();
    let docs = dir.path().join("docs.csv");
    let mut csv = String::from("body,topic\n");
    for i in 0..30 {
        let animal = ["the cat is cute", "a puppy", "the dog is cute"][i % 3];
        let weather = ["it rains today", "cloudy weather", "sunny today"][i % 3];
        csv += &format!("{animal},animals\n{weather},weather\n");
    }
    std::fs::write(&docs, csv).unwrap();
    let plots = dir.path().join("plots");
    let out = Command::new(env!("CARGO_BIN_EXE_dekm"))
        .args(["--quiet", "cluster", "--dataset"])
        .arg(format!("text:{}", docs.display()))
        .args(["--text-col", "body", "--label-col", "topic", "--embedder"])
        .arg(&bert)
        .args([
            "--method",
            "kmeans,dbscan",
            "--k",
            "2",
            "--eps",
            "0.3",
            "--plots",
        ])
        .arg(&plots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // k-means' two clusters, each named by texts of the corpus.
    let (_, kmeans) = stdout
        .split_once("k-means (k=2):\n")
        .unwrap_or_else(|| panic!("no k-means section: {stdout}"));
    let kmeans = kmeans.split("DBSCAN").next().unwrap();
    for c in 0..2 {
        assert!(
            kmeans.contains(&format!("cluster {c}, texts nearest its centre:")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("  the cat is cute") || stdout.contains("  it rains today"));
    for m in ["kmeans", "dbscan"] {
        let png = plots.join(format!("{m}_pca.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", png.display());
    }
}
