//! What stock tools see: health checking and server reflection.

use dekm_server::{Auth, Limits};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_tools_find_health_and_services() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let store = tempfile::tempdir().unwrap();
    let server = Running::start(store.path(), Auth::default(), Limits::default(), None).await;
    let ch = server.channel().await;
    let mut health = HealthClient::new(ch.clone());
    for service in [
        "",
        "dekm.v1.Assigner",
        "dekm.v1.Training",
        "dekm.v1.Registry",
        "dekm.v1.Fleet",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service} is SERVING");
    }
    let mut reflection = ServerReflectionClient::new(ch.clone());
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "dekm.v1.Assigner",
        "dekm.v1.Training",
        "dekm.v1.Registry",
        "dekm.v1.Fleet",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    // The older protocol too, which Python's grpcio-reflection and grpcui speak.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut old = ServerReflectionClient::new(ch.clone());
        let mut answers = old
            .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            }]))
            .await
            .expect("v1alpha is served")
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a service list");
        };
        assert!(list.service.iter().any(|s| s.name == "dekm.v1.Assigner"));
    }
    drop((health, reflection, answers, ch));
    server.stop().await;
}
