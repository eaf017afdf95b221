//! Puts memory.x where the linker finds it, turns `readings.csv` (a header, then three values a
//! row) into the little-endian f32 bytes the firmware embeds, and puts the model the firmware
//! flashes in OUT_DIR: `model.dekm` as it is, or with the `int8` feature its int8 bundle.
use std::{env, fs, path::PathBuf};

use dekm_edge::ModelParts;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("memory.x");
    let model = fs::read("model.dekm").expect("model.dekm");
    let model = if env::var_os("CARGO_FEATURE_INT8").is_some() {
        ModelParts::from_bundle(&model)
            .and_then(|parts| parts.to_int8())
            .expect("model.dekm packs as int8")
            .to_bundle()
    } else {
        model
    };
    fs::write(out.join("model.dekm"), model).expect("OUT_DIR/model.dekm");
    println!("cargo:rustc-link-search={}", out.display());
    let csv = fs::read_to_string("readings.csv").expect("readings.csv");
    let mut bytes = Vec::new();
    for (i, line) in csv.lines().enumerate().skip(1) {
        for cell in line.split(',') {
            let v: f32 = cell.trim().parse().unwrap_or_else(|_| {
                panic!("readings.csv line {}: {cell:?} is not a number", i + 1)
            });
            bytes.extend(v.to_le_bytes());
        }
    }
    fs::write(out.join("readings.f32"), bytes).expect("readings.f32");
    for f in ["memory.x", "model.dekm", "readings.csv"] {
        println!("cargo:rerun-if-changed={f}");
    }
}
