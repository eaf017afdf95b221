//! Compiles `dekm/v1/*.proto` with protox (pure Rust) and generates the message types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["dekm/v1/dekm.proto"], ["."])?;
    prost_build::Config::new().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=dekm");
    Ok(())
}
