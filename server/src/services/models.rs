//! `dekm.v1.Registry`: the stored models, publishing, activation and rollback.

use std::sync::Arc;
use std::time::Instant;

use dekm_proto::pb;
use tonic::{Request, Response, Status};

use crate::convert::model_info;
use crate::registry::{Active, Registry};
use crate::status::{blocking_failed, registry_status};
use crate::telemetry::Telemetry;
use crate::validate::check_model_id;

/// The registry service: the models alone.
#[derive(Debug, Clone)]
pub(crate) struct RegistryService {
    pub(crate) registry: Arc<Registry>,
    pub(crate) telemetry: Arc<Telemetry>,
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let started = Instant::now();
        let active = self.registry.active();
        let result =
            self.registry
                .list()
                .map_err(registry_status)
                .map(|models| pb::ListModelsResponse {
                    models: models.iter().map(|e| model_info(e, &active)).collect(),
                    active_model_id: active.id.clone().unwrap_or_default(),
                    generation: active.generation,
                });
        self.telemetry.record("ListModels", started, &result);
        result.map(Response::new)
    }

    async fn get_model(
        &self,
        req: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let started = Instant::now();
        let result = (|| {
            let id = &req.get_ref().model_id;
            check_model_id(id)?;
            let e = self.registry.get(id).map_err(registry_status)?;
            Ok(model_info(&e, &self.registry.active()))
        })();
        self.telemetry.record("GetModel", started, &result);
        result.map(Response::new)
    }

    async fn publish_model(
        &self,
        req: Request<pb::PublishModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let started = Instant::now();
        let result = async {
            let req = req.into_inner();
            let registry = self.registry.clone();
            tokio::task::spawn_blocking(move || {
                let e = registry.add_bundle(&req.bundle).map_err(registry_status)?;
                if req.activate {
                    registry.activate(&e.id).map_err(registry_status)?;
                }
                tracing::info!(model = %e.id, activate = req.activate, "model published");
                Ok(model_info(&e, &registry.active()))
            })
            .await
            .map_err(blocking_failed)?
        }
        .await;
        self.telemetry.record("PublishModel", started, &result);
        result.map(Response::new)
    }

    async fn activate_model(
        &self,
        req: Request<pb::ActivateModelRequest>,
    ) -> Result<Response<pb::ActivationResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let id = req.into_inner().model_id;
            if id.is_empty() {
                return Err(Status::invalid_argument("model_id is empty"));
            }
            check_model_id(&id)?;
            let registry = self.registry.clone();
            // The compare-and-swap waits on the database: off the runtime's workers.
            tokio::task::spawn_blocking(move || {
                let active = registry.activate(&id).map_err(registry_status)?;
                tracing::info!(model = %id, generation = active.generation, "model activated");
                activation(&registry, active)
            })
            .await
            .map_err(blocking_failed)?
        }
        .await;
        self.telemetry.record("ActivateModel", started, &result);
        result.map(Response::new)
    }

    async fn rollback_model(
        &self,
        _: Request<pb::RollbackModelRequest>,
    ) -> Result<Response<pb::ActivationResponse>, Status> {
        let started = Instant::now();
        let registry = self.registry.clone();
        let result = tokio::task::spawn_blocking(move || {
            let active = registry.rollback().map_err(registry_status)?;
            tracing::info!(model = ?active.id, generation = active.generation, "rolled back");
            activation(&registry, active)
        })
        .await
        .map_err(blocking_failed)
        .and_then(|r| r);
        self.telemetry.record("RollbackModel", started, &result);
        result.map(Response::new)
    }
}

/// The answer to an activation or a rollback: the model now active.
fn activation(registry: &Registry, active: Active) -> Result<pb::ActivationResponse, Status> {
    let e = registry.get("").map_err(registry_status)?;
    Ok(pb::ActivationResponse {
        active: Some(model_info(&e, &active)),
        generation: active.generation,
    })
}
