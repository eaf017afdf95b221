//! Puts memory.x where the linker finds it, and turns `readings.csv` (a header, then three
//! values a row) into the little-endian f32 bytes the firmware embeds.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("memory.x");
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
