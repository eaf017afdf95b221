//! `dekm.v1.Fleet`: devices fetch and watch the active model and report what they assigned.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dekm_proto::pb;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use super::Stream_;
use crate::convert::update_pb;
use crate::fleet::{DeviceReport, FleetStats, totals};
use crate::registry::{Registry, RegistryError};
use crate::status::{blocking_failed, fleet_status, registry_status};
use crate::telemetry::Telemetry;
use crate::validate::{check_model_id, device_status};

/// The fleet service: the models devices fetch and the table of their reports.
#[derive(Debug, Clone)]
pub(crate) struct FleetService {
    pub(crate) registry: Arc<Registry>,
    pub(crate) fleet: Arc<FleetStats>,
    pub(crate) telemetry: Arc<Telemetry>,
}

#[tonic::async_trait]
impl pb::fleet_server::Fleet for FleetService {
    async fn fetch_model(
        &self,
        req: Request<pb::FetchModelRequest>,
    ) -> Result<Response<pb::FetchModelResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let req = req.into_inner();
            device_status(&req.device_id)?;
            check_model_id(&req.current_model_id)?;
            let active = self.registry.active();
            let id = active
                .id
                .clone()
                .ok_or_else(|| registry_status(RegistryError::NoActive))?;
            if req.current_model_id == id {
                return Ok(pb::FetchModelResponse {
                    not_modified: true,
                    model_id: id,
                    sha256: active.sha256,
                    bundle: Vec::new(),
                    generation: active.generation,
                });
            }
            let registry = self.registry.clone();
            let (entry, bundle) = tokio::task::spawn_blocking(move || registry.bundle(&id))
                .await
                .map_err(blocking_failed)?
                .map_err(registry_status)?;
            self.telemetry.fetched(&entry.id);
            tracing::info!(device = %req.device_id, model = %entry.id, "bundle sent");
            Ok(pb::FetchModelResponse {
                not_modified: false,
                model_id: entry.id.clone(),
                sha256: entry.sha256.clone(),
                bundle,
                generation: active.generation,
            })
        }
        .await;
        self.telemetry.record("FetchModel", started, &result);
        result.map(Response::new)
    }

    type WatchModelStream = Stream_<pb::ModelUpdate>;

    async fn watch_model(
        &self,
        req: Request<pb::WatchModelRequest>,
    ) -> Result<Response<Self::WatchModelStream>, Status> {
        let started = Instant::now();
        let result = device_status(&req.get_ref().device_id);
        self.telemetry.record("WatchModel", started, &result);
        result?;
        let stream = WatchStream::new(self.registry.subscribe()).map(|a| Ok(update_pb(&a)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_stats(
        &self,
        req: Request<pb::ReportStatsRequest>,
    ) -> Result<Response<pb::ReportStatsResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let r = req.into_inner();
            device_status(&r.device_id)?;
            if r.model_id.is_empty() {
                return Err(Status::invalid_argument("model_id is empty"));
            }
            check_model_id(&r.model_id)?;
            let k = self
                .registry
                .get(&r.model_id)
                .map_err(registry_status)?
                .meta
                .k;
            let report = DeviceReport {
                counts: r.counts,
                outliers: r.outliers,
                rejected: r.rejected,
                reported_unix: now(),
            };
            self.fleet
                .report(&r.device_id, &r.model_id, k, report)
                .await
                .map_err(fleet_status)
        }
        .await;
        self.telemetry.record("ReportStats", started, &result);
        result.map(|()| Response::new(pb::ReportStatsResponse {}))
    }

    async fn get_fleet_stats(
        &self,
        req: Request<pb::GetFleetStatsRequest>,
    ) -> Result<Response<pb::GetFleetStatsResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let id = &req.get_ref().model_id;
            check_model_id(id)?;
            let filter = (!id.is_empty()).then_some(id.as_str());
            let devices = self.fleet.devices(filter).await.map_err(fleet_status)?;
            let models = totals(devices.clone());
            Ok(pb::GetFleetStatsResponse {
                devices: devices
                    .into_iter()
                    .map(|(model_id, device_id, r)| pb::DeviceStats {
                        device_id,
                        model_id,
                        counts: r.counts,
                        outliers: r.outliers,
                        rejected: r.rejected,
                        reported_unix: r.reported_unix,
                    })
                    .collect(),
                models: models
                    .into_iter()
                    .map(|(model_id, t)| pb::ModelFleetStats {
                        model_id,
                        devices: t.devices as u32,
                        counts: t.counts,
                        outliers: t.outliers,
                        rejected: t.rejected,
                    })
                    .collect(),
            })
        }
        .await;
        self.telemetry.record("GetFleetStats", started, &result);
        result.map(Response::new)
    }
}

/// Seconds since the Unix epoch, the time a report is stamped with.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
