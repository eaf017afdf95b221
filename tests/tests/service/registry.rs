//! `dekm.v1.Registry`: a corrupt bundle, an unknown model and a rollback with nothing to roll
//! back to get their status codes.

use dekm_proto::pb;
use pb::registry_client::RegistryClient;
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registry_requests_get_their_status_codes() {
    let srv = Strict::start().await;
    let mut registry = RegistryClient::new(srv.ch.clone());

    let (id, bundle) = srv.publish_fixture().await;
    assert_eq!(id.len(), 16, "{id}");
    let mut corrupt = bundle.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    let (c, m) = code(
        registry
            .publish_model(admin(pb::PublishModelRequest {
                bundle: corrupt,
                activate: true,
            }))
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("SHA-256 mismatch"), "{m}");

    // Registry and fleet.
    let (c, _) = code(
        registry
            .activate_model(admin(pb::ActivateModelRequest {
                model_id: "0123456789abcdef".into(),
            }))
            .await,
    );
    assert_eq!(c, Code::NotFound);
    let (c, _) = code(
        registry
            .rollback_model(admin(pb::RollbackModelRequest {}))
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);
    drop(registry);
    srv.stop().await;
}
