//! The dekm server behind `dekm serve`: the gRPC services (package `dekm.v1`) for training,
//! assigning, the model registry and the edge fleet, with health checking, server reflection,
//! bearer tokens, optional TLS and Prometheus metrics.
//!
//! Where things live: the store's parts in [`registry`], [`jobs`] and [`fleet`], their
//! metadata in the database of [`db`] (SQLite in the store by default, PostgreSQL for several
//! replicas), tokens in [`auth`], metrics in [`telemetry`]; the four services in `services`
//! (one struct each), request checking in `validate`, conversions to the wire types in
//! `convert` and error codes in `status`. A server restarted on the same store serves the same
//! active model; replicas on one database and one models volume serve the same one.

pub mod auth;
mod convert;
pub mod db;
pub mod fleet;
pub mod jobs;
pub mod registry;
mod services;
mod status;
pub mod telemetry;
mod validate;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use dekm_embed::Embedder;
use dekm_proto::pb;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server as Tonic, ServerTlsConfig};

pub use auth::Auth;

use dekm_trainer::device::{DeviceChoice, DeviceError};
pub use validate::Limits;

use services::{AssignerService, FleetService, RegistryService, TrainingService};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Store directory (model bundles, training work, and the SQLite database by default).
    pub store: PathBuf,
    /// Where the registry state, job records and fleet table live.
    pub database: db::Location,
    /// Root of server-side data sets (`mnist/`, `fashion-mnist/`, CSV/NPY files).
    pub data_root: Option<PathBuf>,
    /// Tokens.
    pub auth: Auth,
    /// Request limits.
    pub limits: Limits,
    /// Jobs that may train at once.
    pub training_slots: usize,
    /// Threads that may encode Assign batches at once.
    pub assign_threads: usize,
    /// PEM certificate chain and private key, for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where Train jobs run (and texts are embedded); checked when the server opens.
    pub device: DeviceChoice,
    /// A sentence-transformers model folder: Train takes text data sets and Assign takes
    /// texts (for models trained with this embedder) when it is set.
    pub embedder: Option<PathBuf>,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database cannot be opened.
    #[error(transparent)]
    Database(#[from] db::DbError),
    /// The model registry cannot be opened.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// The job records cannot be opened.
    #[error(transparent)]
    Jobs(#[from] jobs::JobsError),
    /// The fleet table cannot be opened.
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
    /// A TLS file cannot be read.
    #[error("TLS {path}: {source}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Reflection could not be built from the descriptors.
    #[error("server reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The metrics endpoint failed.
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
    /// The training device cannot be used.
    #[error("training device: {0}")]
    Device(#[from] DeviceError),
    /// The sentence embedder cannot be loaded.
    #[error("sentence embedder: {0}")]
    Embedder(#[from] dekm_embed::EmbedError),
}

/// An opened store, ready to serve.
#[derive(Debug)]
pub struct Server {
    registry: Arc<registry::Registry>,
    jobs: Arc<jobs::Jobs>,
    fleet: Arc<fleet::FleetStats>,
    auth: Auth,
    telemetry: Arc<telemetry::Telemetry>,
    limits: Limits,
    data_root: Option<PathBuf>,
    assign_threads: usize,
    tls: Option<(PathBuf, PathBuf)>,
    /// Where Train jobs run (`auto` resolved when the server opened).
    device: DeviceChoice,
    /// What embeds texts, when the server was given one.
    embedder: Option<Arc<Embedder>>,
}

impl Server {
    /// Opens the store (creating it when new) and checks that it is consistent.
    pub fn open(cfg: ServeConfig) -> Result<Self, ServeError> {
        // A GPU that cannot be had is refused now, not at the first job.
        let (dev, device) = cfg.device.open()?;
        let embedder = match &cfg.embedder {
            Some(dir) => {
                let e = Embedder::load(dir, &dev)?;
                tracing::info!(embedder = %e.id().name, sha256 = %e.id().sha256, dim = e.dim(), "sentence embedder");
                Some(Arc::new(e))
            }
            None => None,
        };
        std::fs::create_dir_all(&cfg.store).map_err(|source| registry::RegistryError::Io {
            path: cfg.store.clone(),
            source,
        })?;
        let db = db::Database::open(&cfg.store, &cfg.database)?;
        let registry = Arc::new(registry::Registry::open(&cfg.store, db.clone())?);
        let jobs = Arc::new(jobs::Jobs::open(
            &cfg.store,
            db.clone(),
            registry.clone(),
            cfg.training_slots,
        )?);
        let fleet = Arc::new(fleet::FleetStats::new(db.clone()));
        let active = registry.active();
        tracing::info!(
            store = %cfg.store.display(),
            database = %cfg.database,
            models = registry.list()?.len(),
            active = ?active.id,
            generation = active.generation,
            %device,
            "store opened"
        );
        Ok(Self {
            registry,
            jobs,
            fleet,
            auth: cfg.auth,
            telemetry: Arc::new(telemetry::Telemetry::default()),
            limits: cfg.limits,
            data_root: cfg.data_root,
            assign_threads: cfg.assign_threads.max(1),
            tls: cfg.tls,
            device,
            embedder,
        })
    }

    /// The model registry (for importing models before serving).
    pub fn registry(&self) -> &Arc<registry::Registry> {
        &self.registry
    }

    /// Serves gRPC on `listener` (and `/metrics` on `metrics`) until `shutdown` resolves.
    pub async fn run(
        self,
        listener: TcpListener,
        metrics: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let s = &self;
        let max = s.limits.max_message_bytes;
        let assigner = AssignerService {
            registry: s.registry.clone(),
            telemetry: s.telemetry.clone(),
            max_batch: s.limits.max_batch,
            slots: Arc::new(Semaphore::new(s.assign_threads)),
            embedder: s.embedder.clone(),
        };
        let training = TrainingService {
            jobs: s.jobs.clone(),
            telemetry: s.telemetry.clone(),
            limits: s.limits,
            data_root: s.data_root.clone(),
            device: s.device,
            embedder: s.embedder.clone(),
        };
        let models = RegistryService {
            registry: s.registry.clone(),
            telemetry: s.telemetry.clone(),
        };
        let fleet = FleetService {
            registry: s.registry.clone(),
            fleet: s.fleet.clone(),
            telemetry: s.telemetry.clone(),
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<pb::assigner_server::AssignerServer<AssignerService>>()
            .await;
        health
            .set_serving::<pb::training_server::TrainingServer<TrainingService>>()
            .await;
        health
            .set_serving::<pb::registry_server::RegistryServer<RegistryService>>()
            .await;
        health
            .set_serving::<pb::fleet_server::FleetServer<FleetService>>()
            .await;
        // Both reflection versions, as grpc-go serves them: Python's grpcio-reflection, grpcui
        // and older grpcurl speak v1alpha only.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(dekm_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        let reflection = reflection()
            .build_v1()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;

        // Assign requests are hundreds of kB; HTTP/2's default 64 kB windows would make every
        // call wait for window updates.
        let mut builder = Tonic::builder()
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(16 << 20));
        if let Some((cert, key)) = &self.tls {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|source| ServeError::Tls {
                    path: p.clone(),
                    source,
                })
            };
            let identity = Identity::from_pem(read(cert)?, read(key)?);
            builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tending = tokio::spawn(tend(s.registry.clone(), s.jobs.clone(), stop_rx.clone()));
        let metrics_task = metrics.map(|l| {
            let mut rx = stop_rx.clone();
            tokio::spawn(telemetry::serve_metrics(
                l,
                s.telemetry.clone(),
                s.jobs.clone(),
                s.registry.clone(),
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                },
            ))
        });
        let router = builder
            .layer(auth::AuthLayer::new(s.auth.clone(), s.telemetry.clone()))
            .layer(tower::util::MapResponseLayer::new(status::remap_oversized))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(
                pb::assigner_server::AssignerServer::new(assigner)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                pb::training_server::TrainingServer::new(training)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                pb::registry_server::RegistryServer::new(models)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                pb::fleet_server::FleetServer::new(fleet)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            );
        // Without TCP_NODELAY a small answer to a large request waits for the peer's delayed
        // ACK (about 40 ms per call on Linux).
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(std::time::Duration::from_secs(60)));
        let served = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        let _ = stop_tx.send(true);
        if let Err(e) = tending.await {
            tracing::error!(error = %e, "registry and job tending failed");
        }
        if let Some(t) = metrics_task {
            match t.await {
                Ok(r) => r.map_err(ServeError::Metrics)?,
                Err(e) => tracing::error!(error = %e, "metrics task failed"),
            }
        }
        served?;
        Ok(())
    }
}

/// Keeps a replica in step with the database until `stop`: the registry's state every
/// [`registry::SYNC_INTERVAL`], the jobs' heartbeat every [`jobs::HEARTBEAT_INTERVAL`]. A
/// failed round is logged and retried at the next tick.
async fn tend(
    registry: Arc<registry::Registry>,
    jobs: Arc<jobs::Jobs>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut sync = tokio::time::interval(registry::SYNC_INTERVAL);
    let mut heartbeat = tokio::time::interval(jobs::HEARTBEAT_INTERVAL);
    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            _ = sync.tick() => {
                match registry.sync().await {
                    Ok(true) => tracing::info!(active = ?registry.active(), "registry changed elsewhere"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "registry sync"),
                }
            }
            _ = heartbeat.tick() => {
                let jobs = jobs.clone();
                match tokio::task::spawn_blocking(move || jobs.tend()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "job heartbeat"),
                    Err(e) => tracing::error!(error = %e, "job heartbeat thread"),
                }
            }
        }
    }
}
