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
    let job_id = loop {
        let p = long.message().await.unwrap().unwrap();
        if p.phase() == pb::Phase::Pretraining {
            break p.job_id;
        }
    };
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
