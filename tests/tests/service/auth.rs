//! Tokens: every service refuses a call without the right one.

use dekm_proto::pb;
use pb::assigner_client::AssignerClient;
use pb::registry_client::RegistryClient;
use pb::training_client::TrainingClient;
use tonic::{Code, Request};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_right_token_are_unauthenticated() {
    let srv = Strict::start().await;
    let mut training = TrainingClient::new(srv.ch.clone());
    let mut registry = RegistryClient::new(srv.ch.clone());
    let mut assigner = AssignerClient::new(srv.ch.clone());

    // Tokens.
    let unauth = [
        code(
            assigner
                .assign(Request::new(pb::AssignRequest::default()))
                .await,
        ),
        code(training.train(train_request(1, false)).await),
        code(training.train(client(train_request(1, false))).await),
        code(
            registry
                .activate_model(with_token(
                    pb::ActivateModelRequest {
                        model_id: "0123456789abcdef".into(),
                    },
                    "wrong-token-0123456789",
                ))
                .await,
        ),
        code(
            registry
                .publish_model(client(pb::PublishModelRequest::default()))
                .await,
        ),
    ];
    for (c, m) in unauth {
        assert_eq!(c, Code::Unauthenticated, "{m}");
    }

    drop((training, registry, assigner));
    srv.stop().await;
}
