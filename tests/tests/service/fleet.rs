//! `dekm.v1.Fleet`: fetching with nothing active and bad device reports get their status codes.

use dekm_proto::pb;
use pb::fleet_client::FleetClient;
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fleet_requests_get_their_status_codes() {
    let srv = Strict::start().await;
    let mut fleet_rpc = FleetClient::new(srv.ch.clone());

    // Nothing active yet.
    let (c, _) = code(
        fleet_rpc
            .fetch_model(client(pb::FetchModelRequest {
                device_id: "d".into(),
                current_model_id: String::new(),
            }))
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);

    let (id, _) = srv.publish_fixture().await;
    let report = |device: &str, model: &str, counts: Vec<u64>| {
        client(pb::ReportStatsRequest {
            device_id: device.into(),
            model_id: model.into(),
            outliers: vec![0; counts.len()],
            counts,
            rejected: 0,
        })
    };
    for (req, want) in [
        (report("d", &id, vec![1, 2]), Code::InvalidArgument),
        (report("", &id, vec![1, 2, 3]), Code::InvalidArgument),
        (
            report("d", "0123456789abcdef", vec![1, 2, 3]),
            Code::NotFound,
        ),
    ] {
        assert_eq!(code(fleet_rpc.report_stats(req).await).0, want);
    }
    assert!(
        fleet_rpc
            .report_stats(report("d", &id, vec![1, 2, 3]))
            .await
            .is_ok()
    );

    drop(fleet_rpc);
    srv.stop().await;
}
