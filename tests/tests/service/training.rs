//! `dekm.v1.Training`: bad settings and data references get their status codes; jobs are
//! found, cancelled while running, and refused once finished.

use dekm_proto::pb;
use pb::training_client::TrainingClient;
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_training_requests_get_their_status_codes() {
    let srv = Strict::start().await;
    let mut training = TrainingClient::new(srv.ch.clone());

    // Training requests.
    let with_data = |data| pb::TrainRequest {
        data: Some(data),
        ..train_request(1, false)
    };
    let dataset = |name: &str| {
        pb::train_request::Data::Dataset(pb::DatasetRef {
            name: name.into(),
            ..Default::default()
        })
    };
    let inline = |rows: Vec<Vec<f32>>, labels: Vec<u32>| {
        pb::train_request::Data::Inline(pb::InlineData {
            samples: samples(&rows),
            labels,
            texts: vec![],
        })
    };
    let mut k0 = train_request(1, false);
    k0.settings.as_mut().unwrap().k = Some(0);
    let mut lr = train_request(1, false);
    lr.settings.as_mut().unwrap().lr = Some(-1.0);
    let mut method = train_request(1, false);
    method.settings.as_mut().unwrap().method = Some("kmeans++".into());
    let mut rotate = train_request(1, false);
    rotate.settings.as_mut().unwrap().augment_rotate_deg = Some(f32::NAN);
    let mut init = train_request(1, false);
    init.settings.as_mut().unwrap().init = Some("xavier".into());
    let mut score = train_request(1, false);
    score.settings.as_mut().unwrap().outlier_score = Some("zscore".into());
    let mut holdout = train_request(1, false);
    holdout.settings.as_mut().unwrap().calibration_holdout = Some(0.9);
    let hop_alone = with_data(pb::train_request::Data::Dataset(pb::DatasetRef {
        name: "csv:rec.csv".into(),
        hop: 3,
        ..Default::default()
    }));
    for (req, want, needle) in [
        (
            pb::TrainRequest::default(),
            Code::InvalidArgument,
            "dataset reference or inline",
        ),
        (k0, Code::InvalidArgument, "k = 0"),
        (lr, Code::InvalidArgument, "learning rate"),
        (method, Code::InvalidArgument, "kmeans++"),
        (rotate, Code::InvalidArgument, "augmentation rotation"),
        (
            init,
            Code::InvalidArgument,
            "init \"xavier\": expected keras or torch",
        ),
        (
            score,
            Code::InvalidArgument,
            "unknown outlier score 'zscore'",
        ),
        (holdout, Code::InvalidArgument, "calibration holdout 0.9"),
        (hop_alone, Code::InvalidArgument, "hop needs a window"),
        (
            with_data(dataset("imagenet")),
            Code::InvalidArgument,
            "imagenet",
        ),
        (
            with_data(dataset("csv:../etc/passwd")),
            Code::InvalidArgument,
            "'..'",
        ),
        (
            with_data(dataset("csv:/etc/passwd")),
            Code::InvalidArgument,
            "relative",
        ),
        (
            with_data(dataset("csv:missing.csv")),
            Code::NotFound,
            "missing.csv",
        ),
        (with_data(dataset("mnist")), Code::NotFound, "mnist"),
        (
            with_data(inline(vec![vec![1.0, 2.0], vec![1.0]], vec![])),
            Code::InvalidArgument,
            "sample 1 has 1",
        ),
        (
            with_data(inline(vec![vec![1.0, f32::INFINITY]; 4], vec![])),
            Code::InvalidArgument,
            "inf",
        ),
        (
            with_data(inline(vec![vec![1.0, 2.0]; 4], vec![0])),
            Code::InvalidArgument,
            "1 labels",
        ),
        (
            with_data(inline(vec![vec![1.0, 2.0]; 2], vec![])),
            Code::InvalidArgument,
            "k = 3",
        ),
        (
            with_data(inline(vec![vec![1.0]; 1001], vec![])),
            Code::ResourceExhausted,
            "limit is 1000",
        ),
    ] {
        let (c, m) = code(training.train(admin(req)).await);
        assert_eq!(c, want, "{m}");
        assert!(m.to_lowercase().contains(needle), "{m:?} lacks {needle:?}");
        // Every message names real values, never a placeholder such as usize::MAX.
        assert!(!m.contains(&usize::MAX.to_string()), "{m}");
    }

    drop(training);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_found_cancelled_and_refused_once_finished() {
    let srv = Strict::start().await;
    let mut training = TrainingClient::new(srv.ch.clone());

    // Jobs: unknown, cancelled while running, already finished.
    let (c, _) = code(
        training
            .get_job(admin(pb::GetJobRequest {
                job_id: "nope".into(),
            }))
            .await,
    );
    assert_eq!(c, Code::NotFound);
    let mut long = training
        .train(admin(train_request(10_000, false)))
        .await
        .unwrap()
        .into_inner();
    let job_id = pretraining_job(&mut long).await;
    let cancelled = training
        .cancel_job(admin(pb::CancelJobRequest {
            job_id: job_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), pb::JobState::Cancelled);
    let mut end = None;
    while let Some(p) = long.message().await.unwrap() {
        end = Some(p);
    }
    assert_eq!(end.unwrap().state(), pb::JobState::Cancelled);
    let (c, _) = code(
        training
            .cancel_job(admin(pb::CancelJobRequest { job_id }))
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);

    drop(training);
    srv.stop().await;
}

/// A recording on the server's data root trains a stream model through `Train`; its readings
/// then go to `Assign` as a device would send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_trains_a_stream_model_that_takes_readings() {
    let srv = Strict::start().await;
    let mut training = TrainingClient::new(srv.ch.clone());
    let mut req = train_request(3, true);
    req.data = Some(pb::train_request::Data::Dataset(pb::DatasetRef {
        name: "csv:rec.csv".into(),
        window: 10,
        hop: 5,
        ..Default::default()
    }));
    req.settings.as_mut().unwrap().k = Some(2);
    let mut progress = training.train(admin(req)).await.unwrap().into_inner();
    let mut last = None;
    while let Some(p) = progress.message().await.unwrap() {
        last = Some(p);
    }
    let last = last.unwrap();
    assert_eq!(last.state(), pb::JobState::Succeeded, "{last:?}");
    let info = pb::registry_client::RegistryClient::new(srv.ch.clone())
        .get_model(admin(pb::GetModelRequest {
            model_id: last.model_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.window, info.hop), (10, 5));
    assert_eq!(info.channels, ["x", "y"]);
    assert_eq!(info.outlier_score, "mahalanobis");
    let readings: Vec<Vec<f32>> = (0..30).map(|t| vec![(0.3 * t as f32).sin(), 0.0]).collect();
    let answer = pb::assigner_client::AssignerClient::new(srv.ch.clone())
        .assign(client(pb::AssignRequest {
            model_id: String::new(),
            samples: vec![],
            readings: samples(&readings),
            texts: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.window_starts, [0, 5, 10, 15, 20]);
    assert_eq!(answer.assignments.len(), 5);
    drop(training);
    srv.stop().await;
}
