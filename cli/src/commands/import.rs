//! `dekm import`: add an exported model to a server store. The store's database is shared
//! with any server running on it, which follows an activation at its next registry sync.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dekm_server::db::Database;

use super::args::StoreArgs;

/// `dekm import`'s arguments.
#[derive(Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
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
        store: StoreArgs { store, database },
        model,
        activate,
    } = args;
    let activate = *activate;
    std::fs::create_dir_all(store)?;
    let db = Database::open(store, database)?;
    let registry = dekm_server::registry::Registry::open(store, db)?;
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
