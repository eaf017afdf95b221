//! `dekm serve`: the gRPC server over a store directory.
use std::path::PathBuf;

use super::args::StoreArgs;
use anyhow::{Context, Result, bail};
use clap::Args;
use dekm_server::{Auth, Limits, ServeConfig, Server};
use dekm_trainer::device::DeviceChoice;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: std::net::SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// Root of server-side data sets (mnist/, fashion-mnist/, CSV/NPY files).
    #[arg(long, env = "DEKM_DATA")]
    data_dir: Option<PathBuf>,
    /// Token for Train, CancelJob, PublishModel, ActivateModel, RollbackModel, jobs and fleet
    /// stats.
    #[arg(long, env = "DEKM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Token for Assign, models, FetchModel, WatchModel and ReportStats (open when unset).
    #[arg(long, env = "DEKM_CLIENT_TOKEN", hide_env_values = true)]
    client_token: Option<String>,
    /// Run without an admin token: anyone who reaches the port may train and activate models.
    #[arg(long)]
    no_auth: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// PEM certificate chain, for TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key, for TLS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest accepted message in MiB.
    #[arg(long, default_value_t = 64)]
    max_message_mib: usize,
    /// Most samples in one Assign request.
    #[arg(long, default_value_t = 4096)]
    max_batch: usize,
    /// Training jobs that run at once (more wait in a queue).
    #[arg(long, default_value_t = 1)]
    training_slots: usize,
    /// Assign batches encoded at once (default: two per core; with one per core the cores sit
    /// idle between a batch's end and the next one's start, about 10% of loopback throughput).
    #[arg(long)]
    assign_threads: Option<usize>,
    /// Logs as JSON lines.
    #[arg(long)]
    pub(crate) log_json: bool,
    /// Where Train jobs run: auto (a CUDA GPU when this dekm was built with CUDA and one
    /// answers, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// A sentence-transformers model folder (as `dekm train --embedder`): Train then accepts
    /// text:PATH data sets and inline texts, and Assign accepts texts for models trained with
    /// this embedder (checked by its weights' SHA-256). Texts are embedded on --device.
    #[arg(long, env = "DEKM_EMBEDDER")]
    embedder: Option<PathBuf>,
}

fn server_config(a: &ServeArgs) -> Result<ServeConfig> {
    if a.admin_token.is_none() && !a.no_auth {
        bail!(
            "set an admin token (--admin-token or DEKM_ADMIN_TOKEN), or pass --no-auth to let anyone who reaches the port train and activate models"
        );
    }
    for t in [&a.admin_token, &a.client_token].into_iter().flatten() {
        if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("tokens must be at least 16 printable ASCII characters");
        }
    }
    Ok(ServeConfig {
        store: a.store.store.clone(),
        database: a.store.database.clone(),
        data_root: a.data_dir.clone(),
        auth: Auth::new(a.admin_token.clone(), a.client_token.clone()),
        limits: Limits {
            max_message_bytes: a.max_message_mib.max(1) << 20,
            max_batch: a.max_batch.max(1),
            ..Limits::default()
        },
        training_slots: a.training_slots.max(1),
        assign_threads: a.assign_threads.unwrap_or_else(|| {
            2 * std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
        tls: a.tls_cert.clone().zip(a.tls_key.clone()),
        device: a.device,
        embedder: a.embedder.clone(),
    })
}

/// Opens the store and serves until Ctrl-C.
pub(crate) fn run(a: &ServeArgs) -> Result<()> {
    let server = Server::open(server_config(a)?)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("cannot listen on {}", a.addr))?;
        let metrics = match a.metrics_addr {
            Some(m) => Some(
                tokio::net::TcpListener::bind(m)
                    .await
                    .with_context(|| format!("cannot listen on {m}"))?,
            ),
            None => None,
        };
        tracing::info!(addr = %listener.local_addr()?, metrics = ?a.metrics_addr, tls = a.tls_cert.is_some(), "serving");
        eprintln!("dekm serve: listening on {}", listener.local_addr()?);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        };
        server.run(listener, metrics, shutdown).await?;
        anyhow::Ok(())
    })
}
