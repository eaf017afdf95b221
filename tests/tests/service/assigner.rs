//! `dekm.v1.Assigner`: every bad request gets its status code, in a call and in a stream.

use dekm_proto::pb;
use pb::assigner_client::AssignerClient;
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_assign_requests_get_their_status_codes() {
    let srv = Strict::start().await;
    let mut assigner = AssignerClient::new(srv.ch.clone());
    let row = vec![0.5f32; 6];

    // Nothing active yet.
    let (c, m) = code(assigner.assign(assign("", vec![row.clone()])).await);
    assert_eq!(c, Code::FailedPrecondition, "{m}");

    let (id, _) = srv.publish_fixture().await;

    // Samples.
    let mut nan = row.clone();
    nan[2] = f32::NAN;
    for (req, want, needle) in [
        (
            assign("", vec![row.clone(), vec![1.0; 5]]),
            Code::InvalidArgument,
            "sample 1",
        ),
        (
            assign("", vec![row.clone(), nan]),
            Code::InvalidArgument,
            "sample 1",
        ),
        (assign("", vec![]), Code::InvalidArgument, "no samples"),
        (
            assign("not-an-id", vec![row.clone()]),
            Code::InvalidArgument,
            "hex",
        ),
        (
            assign("0123456789abcdef", vec![row.clone()]),
            Code::NotFound,
            "unknown model",
        ),
        (
            assign(&id, vec![row.clone(); 9]),
            Code::ResourceExhausted,
            "limit is 8",
        ),
        // 12 MiB in one message, over the 8 MiB limit.
        (
            assign(&id, vec![vec![0.5; 3 << 20]]),
            Code::ResourceExhausted,
            "too large",
        ),
    ] {
        let (c, m) = code(assigner.assign(req).await);
        assert_eq!(c, want, "{m}");
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
    }
    assert!(
        assigner
            .assign(assign(&id, vec![row.clone()]))
            .await
            .is_ok()
    );

    // A stream ends with the status of its first bad batch.
    let mut s = assigner
        .assign_stream(with_token(
            tokio_stream::iter(vec![
                pb::AssignRequest {
                    model_id: id.clone(),
                    samples: samples(std::slice::from_ref(&row)),
                },
                pb::AssignRequest {
                    model_id: id.clone(),
                    samples: samples(&[vec![1.0; 2]]),
                },
            ]),
            CLIENT,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(s.message().await.unwrap().is_some());
    assert_eq!(s.message().await.unwrap_err().code(), Code::InvalidArgument);
    let mut s = assigner
        .assign_stream(with_token(
            tokio_stream::iter(vec![pb::AssignRequest {
                model_id: id.clone(),
                samples: samples(&[vec![0.5; 3 << 20]]),
            }]),
            CLIENT,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.message().await.unwrap_err().code(),
        Code::ResourceExhausted
    );

    drop(assigner);
    srv.stop().await;
}
