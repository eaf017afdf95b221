//! The whole life of a model through the service: trained through `Train` (progress read to
//! the end), assigned exactly as the edge crate assigns, published, activated and rolled back,
//! synced by a device, reported on, and served again after a restart on the same store.

use dekm_edge::fleet::{self, Synced};
use dekm_edge::model::fixture;
use dekm_edge::store::DeviceStore;
use dekm_edge::{Counters, ModelParts};
use dekm_proto::pb;
use dekm_server::{Auth, Limits};
use pb::assigner_client::AssignerClient;
use pb::fleet_client::FleetClient;
use pb::registry_client::RegistryClient;
use pb::training_client::TrainingClient;
use tonic::Code;

use crate::common;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_assign_distribute_roll_back_and_restart() {
    let store = tempfile::tempdir().unwrap();
    let server = Running::start(
        store.path(),
        Auth::new(Some(ADMIN.into()), None),
        Limits::default(),
        None,
    )
    .await;
    let ch = server.channel().await;
    let mut training = TrainingClient::new(ch.clone());
    let mut registry = RegistryClient::new(ch.clone());
    let mut assigner = AssignerClient::new(ch.clone());
    let mut fleet_rpc = FleetClient::new(ch.clone()).max_decoding_message_size(64 << 20);

    // Train through the progress stream, to the end.
    let mut stream = training
        .train(admin(train_request(3, true)))
        .await
        .unwrap()
        .into_inner();
    let mut steps = Vec::new();
    while let Some(p) = stream.message().await.unwrap() {
        steps.push(p);
    }
    let last = steps.last().unwrap().clone();
    assert_eq!(last.state(), pb::JobState::Succeeded, "{last:?}");
    assert_eq!(last.phase(), pb::Phase::Done);
    let pretrain: Vec<u32> = steps
        .iter()
        .filter(|p| p.phase() == pb::Phase::Pretraining)
        .map(|p| p.step)
        .collect();
    assert_eq!(pretrain, [1, 2, 3]);
    assert!(
        steps
            .iter()
            .any(|p| p.phase() == pb::Phase::Clustering && p.metrics.is_some())
    );
    let dekm: Vec<&pb::Progress> = steps
        .iter()
        .filter(|p| p.phase() == pb::Phase::Dekm)
        .collect();
    assert!(!dekm.is_empty() && dekm.iter().all(|p| p.loss.is_finite() && p.steps == 3));
    assert!(last.metrics.is_some_and(|m| m.acc > 0.5), "{last:?}");
    let model1 = last.model_id.clone();
    let job = training
        .get_job(admin(pb::GetJobRequest {
            job_id: last.job_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (job.state(), job.model_id.as_str()),
        (pb::JobState::Succeeded, model1.as_str())
    );

    let list = registry
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (list.active_model_id.as_str(), list.generation),
        (model1.as_str(), 1)
    );
    assert_eq!(list.models.len(), 1);
    assert_eq!(list.models[0].dataset, "synthetic");

    // Assign equals the edge crate, bit for bit, on the bundle the fleet gets.
    let rows: Vec<Vec<f32>> = {
        let ds = common::synthetic(3, 50, 99);
        (0..ds.len()).map(|i| ds.sample(i).to_vec()).collect()
    };
    let resp = assigner
        .assign(pb::AssignRequest {
            model_id: String::new(),
            samples: samples(&rows),
            readings: vec![],
            texts: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.model_id, model1);
    let fetched = fleet_rpc
        .fetch_model(pb::FetchModelRequest {
            device_id: "probe".into(),
            current_model_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.assignments, local(&fetched.bundle, &rows));

    // The stream answers each batch in order, as the unary call does.
    let batches: Vec<pb::AssignRequest> = rows
        .chunks(20)
        .map(|c| pb::AssignRequest {
            model_id: model1.clone(),
            samples: samples(c),
            readings: vec![],
            texts: vec![],
        })
        .collect();
    let mut out = assigner
        .assign_stream(tokio_stream_iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(r) = out.message().await.unwrap() {
        streamed.extend(r.assignments);
    }
    assert_eq!(streamed, resp.assignments);

    // A device syncs, then is up to date.
    let dev = tempfile::tempdir().unwrap();
    let device = DeviceStore::at(dev.path());
    let mut client = fleet::connect(&server.url, None, None).await.unwrap();
    assert_eq!(
        fleet::sync_once(&mut client, &device, "dev-1")
            .await
            .unwrap(),
        Synced::Updated {
            model_id: model1.clone(),
            previous: None
        }
    );
    assert_eq!(
        fleet::sync_once(&mut client, &device, "dev-1")
            .await
            .unwrap(),
        Synced::NotModified {
            model_id: model1.clone()
        }
    );
    let mut watch = fleet::watch(&mut client, "dev-1").await.unwrap();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(
        (first.model_id.as_str(), first.generation),
        (model1.as_str(), 1)
    );

    // Publish a second model and activate it: watchers hear of it, the device gets it.
    let bundle2 = fixture::dense(5).to_bundle();
    let info2 = registry
        .publish_model(admin(pb::PublishModelRequest {
            bundle: bundle2.clone(),
            activate: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!info2.active);
    let act = registry
        .activate_model(admin(pb::ActivateModelRequest {
            model_id: info2.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (act.active.unwrap().id, act.generation),
        (info2.id.clone(), 2)
    );
    let update = watch.message().await.unwrap().unwrap();
    assert_eq!(
        (update.model_id.as_str(), update.generation),
        (info2.id.as_str(), 2)
    );
    assert_eq!(
        fleet::sync_once(&mut client, &device, "dev-1")
            .await
            .unwrap(),
        Synced::Updated {
            model_id: info2.id.clone(),
            previous: Some(model1.clone())
        }
    );
    assert_eq!(
        dekm_edge::file::read_parts(dev.path()).unwrap(),
        ModelParts::from_bundle(&bundle2).unwrap()
    );

    // Stats from two devices, summed per model.
    for (dev_id, counts) in [("dev-1", vec![5, 3, 2]), ("dev-2", vec![1, 1, 1])] {
        let c = Counters {
            model_id: info2.id.clone(),
            outliers: vec![1, 0, 0],
            counts,
            rejected: 2,
        };
        fleet::report(&mut client, dev_id, &c).await.unwrap();
    }
    let stats = fleet_rpc
        .get_fleet_stats(admin(pb::GetFleetStatsRequest {
            model_id: info2.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.devices.len(), 2);
    assert_eq!(
        (
            stats.models[0].devices,
            stats.models[0].counts.as_slice(),
            stats.models[0].rejected
        ),
        (2, &[6, 4, 3][..], 4)
    );

    // Roll back to the trained model; there is nothing before it.
    let back = registry
        .rollback_model(admin(pb::RollbackModelRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (back.active.unwrap().id, back.generation),
        (model1.clone(), 3)
    );
    let err = registry
        .rollback_model(admin(pb::RollbackModelRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    let metrics = server.metrics_text().await;
    for needle in [
        "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8",
        "dekm_grpc_requests_total{method=\"Assign\",code=\"OK\"} 1",
        "dekm_grpc_requests_total{method=\"RollbackModel\",code=\"FAILED_PRECONDITION\"} 1",
        "dekm_assigned_samples_total",
        "dekm_cluster_assignments_total{model_id=\"",
        "# HELP dekm_cluster_outliers Samples flagged as outliers",
        "dekm_bundle_downloads_total",
        "dekm_jobs{state=\"succeeded\"} 1",
        "dekm_active_generation 3",
        &format!("dekm_active_model_info{{model_id=\"{model1}\"}} 1"),
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    drop((training, registry, assigner, fleet_rpc, client, watch, ch));
    server.stop().await;

    // Restarted on the same store: same active model, same answers, same job record.
    let server = Running::start(
        store.path(),
        Auth::new(Some(ADMIN.into()), None),
        Limits::default(),
        None,
    )
    .await;
    let ch = server.channel().await;
    let list = RegistryClient::new(ch.clone())
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (list.active_model_id.as_str(), list.generation),
        (model1.as_str(), 3)
    );
    assert_eq!(list.models.len(), 2);
    let again = AssignerClient::new(ch.clone())
        .assign(pb::AssignRequest {
            model_id: String::new(),
            samples: samples(&rows),
            readings: vec![],
            texts: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.assignments, resp.assignments);
    let job = TrainingClient::new(ch.clone())
        .get_job(admin(pb::GetJobRequest {
            job_id: last.job_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state(), pb::JobState::Succeeded);
    drop(ch);
    server.stop().await;
}
