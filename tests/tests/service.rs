//! The gRPC service end to end on 127.0.0.1 (ephemeral ports): training through `Train`,
//! `Assign` against the edge crate, the registry, device sync, stats, metrics, restarts, and
//! every bad request's status code.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use dekm_edge::fleet::{self, Synced};
use dekm_edge::model::fixture;
use dekm_edge::store::DeviceStore;
use dekm_edge::{Counters, Model, ModelParts};
use dekm_proto::pb;
use dekm_trainer::service::{Auth, Limits, ServeConfig, Server};
use pb::assigner_client::AssignerClient;
use pb::fleet_client::FleetClient;
use pb::registry_client::RegistryClient;
use pb::training_client::TrainingClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::{Code, Request};

const ADMIN: &str = "admin-token-0123456789";
const CLIENT: &str = "client-token-0123456789";

struct Running {
    url: String,
    metrics: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(store: &Path, auth: Auth, limits: Limits, data_root: Option<&Path>) -> Self {
        Self::start_with(ServeConfig {
            store: store.to_path_buf(),
            data_root: data_root.map(Path::to_path_buf),
            auth,
            limits,
            training_slots: 1,
            assign_threads: 2,
            tls: None,
        })
        .await
    }

    async fn start_with(cfg: ServeConfig) -> Self {
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let server = Server::open(cfg).expect("store opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (url, maddr) = (
            format!(
                "{scheme}://localhost:{}",
                listener.local_addr().unwrap().port()
            ),
            metrics.local_addr().unwrap(),
        );
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(listener, Some(metrics), async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        Self {
            url,
            metrics: maddr,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn metrics_text(&self) -> String {
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn admin<T>(msg: T) -> Request<T> {
    with_token(msg, ADMIN)
}

fn client<T>(msg: T) -> Request<T> {
    with_token(msg, CLIENT)
}

fn samples(rows: &[Vec<f32>]) -> Vec<pb::Sample> {
    rows.iter()
        .map(|r| pb::Sample { values: r.clone() })
        .collect()
}

/// What the edge crate computes locally for `rows` with the bundle `bytes`.
fn local(bytes: &[u8], rows: &[Vec<f32>]) -> Vec<pb::Assignment> {
    let model = Model::from_parts(&ModelParts::from_bundle(bytes).unwrap()).unwrap();
    let mut s = model.session();
    rows.iter()
        .map(|r| {
            let a = s.assign(r).unwrap();
            pb::Assignment {
                cluster: a.cluster,
                distance: a.distance,
                margin: a.margin,
                outlier: a.outlier,
            }
        })
        .collect()
}

fn train_request(epochs: u32, activate: bool) -> pb::TrainRequest {
    pb::TrainRequest {
        data: Some(pb::train_request::Data::Dataset(pb::DatasetRef {
            name: "synthetic".into(),
            synthetic_samples: 600,
            ..Default::default()
        })),
        settings: Some(pb::TrainSettings {
            k: Some(3),
            epochs: Some(epochs),
            max_iter: Some(3),
            steps_per_iter: Some(10),
            batch_size: Some(64),
            restarts: Some(3),
            seed: Some(11),
            ..Default::default()
        }),
        activate,
    }
}

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
        "dekm_grpc_requests_total{method=\"Assign\",code=\"Ok\"} 1",
        "dekm_grpc_requests_total{method=\"RollbackModel\",code=\"FailedPrecondition\"} 1",
        "dekm_assigned_samples_total",
        "dekm_bundle_downloads_total",
        "dekm_jobs{state=\"succeeded\"} 1",
        "dekm_active_generation 3",
        &format!("dekm_active_model{{model_id=\"{model1}\"}} 1"),
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

/// A finite request stream for a client-streaming call.
fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl tonic::IntoStreamingRequest<Message = T> {
    tokio_stream::iter(items)
}

/// The status code of a failed call.
fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let e = r.expect_err("the call must fail");
    (e.code(), e.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_codes() {
    let store = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("ok.csv"), "1,2\n3,4\n").unwrap();
    let limits = Limits {
        // The fixture's bundle (a dense 6-500-500-2000-4 encoder) is about 5 MiB.
        max_message_bytes: 8 << 20,
        max_batch: 8,
        max_inline_samples: 1000,
    };
    let server = Running::start(
        store.path(),
        Auth::new(Some(ADMIN.into()), Some(CLIENT.into())),
        limits,
        Some(data.path()),
    )
    .await;
    let ch = server.channel().await;
    let mut training = TrainingClient::new(ch.clone());
    let mut registry = RegistryClient::new(ch.clone());
    let mut assigner = AssignerClient::new(ch.clone());
    let mut fleet_rpc = FleetClient::new(ch.clone());
    let assign = |model_id: &str, rows: Vec<Vec<f32>>| {
        client(pb::AssignRequest {
            model_id: model_id.into(),
            samples: samples(&rows),
        })
    };
    let row = vec![0.5f32; 6];

    // Nothing active yet.
    let (c, m) = code(assigner.assign(assign("", vec![row.clone()])).await);
    assert_eq!(c, Code::FailedPrecondition, "{m}");
    let (c, _) = code(
        fleet_rpc
            .fetch_model(client(pb::FetchModelRequest {
                device_id: "d".into(),
                current_model_id: String::new(),
            }))
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);

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

    let bundle = fixture::dense(1).to_bundle();
    let id = registry
        .publish_model(admin(pb::PublishModelRequest {
            bundle: bundle.clone(),
            activate: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .id;
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
    }

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

    drop((training, registry, assigner, fleet_rpc, ch));
    server.stop().await;
}

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
    drop((health, reflection, answers, ch));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sync_over_tls_and_plaintext_is_refused() {
    let store = tempfile::tempdir().unwrap();
    let registry = dekm_trainer::service::registry::Registry::open(store.path()).unwrap();
    let id = registry.add(&fixture::dense(3)).unwrap().id.clone();
    registry.activate(&id).unwrap();
    drop(registry);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let (cert_path, key_path) = (store.path().join("cert.pem"), store.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, &key_pem).unwrap();
    let server = Running::start_with(ServeConfig {
        store: store.path().to_path_buf(),
        data_root: None,
        auth: Auth::new(Some(ADMIN.into()), Some(CLIENT.into())),
        limits: Limits::default(),
        training_slots: 1,
        assign_threads: 2,
        tls: Some((cert_path, key_path)),
    })
    .await;

    let dev = tempfile::tempdir().unwrap();
    let device = DeviceStore::at(dev.path());
    let mut client = fleet::connect(&server.url, Some(CLIENT), Some(cert_pem.as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        fleet::sync_once(&mut client, &device, "tls-dev")
            .await
            .unwrap(),
        Synced::Updated {
            model_id: id.clone(),
            previous: None
        }
    );
    // Without the server's certificate, or in plaintext, nothing gets through.
    assert!(
        fleet::connect(&server.url, Some(CLIENT), None)
            .await
            .is_err()
    );
    let plain = server.url.replace("https://", "http://");
    if let Ok(mut c) = fleet::connect(&plain, Some(CLIENT), None).await {
        assert!(fleet::sync_once(&mut c, &device, "tls-dev").await.is_err());
    }
    drop(client);
    server.stop().await;
}
