//! Keeping a device on the server's active model (`fleet` feature): fetch the bundle when it
//! changed, verify it, swap it into the [`DeviceStore`], and report what the device assigned.

use std::str::FromStr;

use dekm_proto::pb::{self, fleet_client::FleetClient};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::store::{DeviceStore, Installed, StoreError};
use crate::summary::Counters;

/// Why a sync failed. The store is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The server address is not a URI.
    #[error("server address {url:?}: {reason}")]
    Address {
        /// What was given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The token contains characters that cannot go into a header.
    #[error("the token is not a valid header value")]
    Token,
    /// No connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The server.
        url: String,
        /// Underlying error.
        source: tonic::transport::Error,
    },
    /// The server answered with an error status.
    #[error("server: {0}")]
    Status(#[from] tonic::Status),
    /// The bundle could not be verified or stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Largest bundle a device accepts.
pub const MAX_BUNDLE_BYTES: usize = 256 << 20;

/// A connected fleet client.
pub type Client = FleetClient<InterceptedService<Channel, Bearer>>;

/// Connects to `url` (`http://host:port`, or `https://` with TLS verified against the system
/// roots or the PEM `ca` given), sending `token` with every call when given.
pub async fn connect(
    url: &str,
    token: Option<&str>,
    ca: Option<&[u8]>,
) -> Result<Client, FleetError> {
    let address = |reason: String| FleetError::Address {
        url: url.into(),
        reason,
    };
    let mut endpoint = Endpoint::from_str(url).map_err(|e| address(e.to_string()))?;
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(pem) = ca {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| address(e.to_string()))?;
    }
    let bearer = token
        .map(|t| MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| FleetError::Token))
        .transpose()?;
    let channel = endpoint
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 << 20))
        .connect()
        .await
        .map_err(|source| FleetError::Connect {
            url: url.into(),
            source,
        })?;
    // Bundles of dense models on wide inputs pass tonic's default 4 MiB receive limit.
    Ok(
        FleetClient::new(InterceptedService::new(channel, Bearer(bearer)))
            .max_decoding_message_size(MAX_BUNDLE_BYTES),
    )
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// The device already had the active model.
    NotModified {
        /// Its id.
        model_id: String,
    },
    /// The active model was downloaded, verified and made current.
    Updated {
        /// The new model.
        model_id: String,
        /// The model it replaced, kept for rollback.
        previous: Option<String>,
    },
}

/// Fetches the active model unless the store already has it, and installs it.
pub async fn sync_once(
    client: &mut Client,
    store: &DeviceStore,
    device_id: &str,
) -> Result<Synced, FleetError> {
    let current = store.current()?;
    let resp = client
        .fetch_model(pb::FetchModelRequest {
            device_id: device_id.into(),
            current_model_id: current.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    if resp.not_modified {
        return Ok(Synced::NotModified {
            model_id: resp.model_id,
        });
    }
    // Blocking file I/O and a SHA-256 over a megabyte: keep it off the async workers.
    let store2 = store.clone();
    let installed = tokio::task::spawn_blocking(move || store2.install(&resp.sha256, &resp.bundle))
        .await
        .map_err(|e| tonic::Status::internal(format!("install task failed: {e}")))??;
    let model_id = store.current()?.unwrap_or_default();
    Ok(match installed {
        Installed::Unchanged => Synced::NotModified { model_id },
        Installed::Switched { previous } => Synced::Updated { model_id, previous },
    })
}

/// Reports this device's counters (a later report for the same model replaces this one).
pub async fn report(
    client: &mut Client,
    device_id: &str,
    counters: &Counters,
) -> Result<(), FleetError> {
    client
        .report_stats(pb::ReportStatsRequest {
            device_id: device_id.into(),
            model_id: counters.model_id.clone(),
            counts: counters.counts.clone(),
            outliers: counters.outliers.clone(),
            rejected: counters.rejected,
        })
        .await?;
    Ok(())
}

/// Opens the stream of active-model changes.
pub async fn watch(
    client: &mut Client,
    device_id: &str,
) -> Result<tonic::Streaming<pb::ModelUpdate>, FleetError> {
    Ok(client
        .watch_model(pb::WatchModelRequest {
            device_id: device_id.into(),
        })
        .await?
        .into_inner())
}
