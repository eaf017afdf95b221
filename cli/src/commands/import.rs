//! `dekm import`: add an exported model to a server store while no server runs on it.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// `dekm import`'s arguments.
#[derive(Args)]
pub(crate) struct ImportArgs {
    /// Store directory.
    #[arg(long)]
    store: PathBuf,
    /// Model directory, model.safetensors or bundle.
    #[arg(long)]
    model: PathBuf,
    /// Make it the active model.
    #[arg(long)]
    activate: bool,
}

/// Adds the model to the store's registry, and activates it when asked.
pub(crate) fn run(args: &ImportArgs) -> Result<()> {
    let ImportArgs {
        store,
        model,
        activate,
    } = args;
    let activate = *activate;
    let registry = dekm_server::registry::Registry::open(store)?;
    let parts = dekm_edge::file::read_parts(model)?;
    let entry = registry.add(&parts)?;
    if activate {
        registry.activate(&entry.id)?;
    }
    println!(
        "{} {} ({} bytes){}",
        entry.id,
        entry.sha256,
        entry.bytes,
        if activate { ", active" } else { "" }
    );
    Ok(())
}
