//! Prometheus metrics: requests and latencies per gRPC method and status, samples assigned and
//! bundles served per model, job states and the active model. Served on `/metrics` in the
//! OpenMetrics text format (what `prometheus_client` writes), with that content type; status
//! codes are labelled with gRPC's names (`FAILED_PRECONDITION`), as other gRPC servers' metrics
//! are.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as Prom;
use tonic::Status;

use crate::jobs::{JobState, Jobs};
use crate::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    model_id: String,
    cluster: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(5e-5, 2.0, 20))
}

/// The server's metrics.
pub struct Telemetry {
    prom: Prom,
    requests: Family<Call, Counter>,
    latency: Family<Method, Histogram, fn() -> Histogram>,
    assigned: Family<ModelLabel, Counter>,
    by_cluster: Family<ClusterLabel, Counter>,
    outliers: Family<ClusterLabel, Counter>,
    fetched: Family<ModelLabel, Counter>,
    jobs: Family<StateLabel, Gauge>,
    active: Family<ModelLabel, Gauge>,
    generation: Gauge,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut prom = Prom::with_prefix("dekm");
        let requests = Family::<Call, Counter>::default();
        let latency =
            Family::<Method, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let assigned = Family::<ModelLabel, Counter>::default();
        let by_cluster = Family::<ClusterLabel, Counter>::default();
        let outliers = Family::<ClusterLabel, Counter>::default();
        let fetched = Family::<ModelLabel, Counter>::default();
        let jobs = Family::<StateLabel, Gauge>::default();
        let active = Family::<ModelLabel, Gauge>::default();
        let generation = Gauge::default();
        prom.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            requests.clone(),
        );
        prom.register(
            "grpc_request_duration_seconds",
            "gRPC call latency (streams: until the handler returns the stream)",
            latency.clone(),
        );
        prom.register(
            "assigned_samples",
            "Samples assigned over gRPC, by model",
            assigned.clone(),
        );
        prom.register(
            "cluster_assignments",
            "Samples assigned over gRPC, by model and cluster",
            by_cluster.clone(),
        );
        prom.register(
            "cluster_outliers",
            "Samples flagged as outliers over gRPC, by model and the cluster they were assigned to",
            outliers.clone(),
        );
        prom.register(
            "bundle_downloads",
            "Model bundles sent to devices, by model",
            fetched.clone(),
        );
        prom.register("jobs", "Training jobs by state", jobs.clone());
        prom.register(
            "active_model_info",
            "1 for the active model's id",
            active.clone(),
        );
        prom.register(
            "active_generation",
            "Activations and rollbacks so far",
            generation.clone(),
        );
        Self {
            prom,
            requests,
            latency,
            assigned,
            by_cluster,
            outliers,
            fetched,
            jobs,
            active,
            generation,
        }
    }
}

impl Telemetry {
    /// Counts one finished call.
    pub fn record<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.requests
            .get_or_create(&Call {
                method,
                code: code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&Method { method })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts samples assigned with `model`, given as `(cluster, outlier)`: in total, per
    /// cluster, and the outliers per cluster, so an operator sees which group of behaviour
    /// the anomalies came from.
    pub fn assigned(&self, model: &str, assignments: impl IntoIterator<Item = (u32, bool)>) {
        let mut n = 0u64;
        for (cluster, outlier) in assignments {
            n += 1;
            let label = ClusterLabel {
                model_id: model.into(),
                cluster,
            };
            self.by_cluster.get_or_create(&label).inc();
            if outlier {
                self.outliers.get_or_create(&label).inc();
            }
        }
        self.assigned
            .get_or_create(&ModelLabel {
                model_id: model.into(),
            })
            .inc_by(n);
    }

    /// Counts a bundle download.
    pub fn fetched(&self, model: &str) {
        self.fetched
            .get_or_create(&ModelLabel {
                model_id: model.into(),
            })
            .inc();
    }

    /// The text exposition, with job and model gauges read now.
    pub async fn render(&self, jobs: &Jobs, registry: &Registry) -> String {
        let counts = jobs.counts().await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "job counts for the metrics");
            Default::default()
        });
        for (state, name) in [
            (JobState::Queued, "queued"),
            (JobState::Running, "running"),
            (JobState::Succeeded, "succeeded"),
            (JobState::Failed, "failed"),
            (JobState::Cancelled, "cancelled"),
        ] {
            let n = counts.get(&state).copied().unwrap_or(0);
            self.jobs
                .get_or_create(&StateLabel { state: name })
                .set(n as i64);
        }
        let active = registry.active();
        self.active.clear();
        if let Some(id) = active.id {
            self.active
                .get_or_create(&ModelLabel { model_id: id })
                .set(1);
        }
        self.generation.set(active.generation as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.prom);
        out
    }
}

/// The content type of what `prometheus_client`'s text encoder writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// gRPC's name for a status code, as the gRPC specification and other servers' metrics spell it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
    jobs: Arc<Jobs>,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            let body = telemetry.render(&jobs, &registry).await;
            ([(CONTENT_TYPE, OPENMETRICS)], body)
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
