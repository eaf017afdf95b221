//! What every service test needs: a server on an ephemeral loopback port, tokens, requests
//! and the edge crate's own answers to compare with.

use std::net::SocketAddr;
use std::path::Path;

use dekm_edge::{Model, ModelParts};
use dekm_proto::pb;
use dekm_server::{Auth, Limits, ServeConfig, Server};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::{Code, Request};

pub(crate) const ADMIN: &str = "admin-token-0123456789";
pub(crate) const CLIENT: &str = "client-token-0123456789";

pub(crate) struct Running {
    pub(crate) url: String,
    pub(crate) metrics: SocketAddr,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub(crate) async fn start(
        store: &Path,
        auth: Auth,
        limits: Limits,
        data_root: Option<&Path>,
    ) -> Self {
        Self::start_with(config(store, auth, limits, data_root)).await
    }

    pub(crate) async fn start_with(cfg: ServeConfig) -> Self {
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

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub(crate) async fn metrics_text(&self) -> String {
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

/// A plain-text server on `store` with one training slot, on the CPU, without an embedder.
pub(crate) fn config(
    store: &Path,
    auth: Auth,
    limits: Limits,
    data_root: Option<&Path>,
) -> ServeConfig {
    ServeConfig {
        store: store.to_path_buf(),
        database: Default::default(),
        data_root: data_root.map(Path::to_path_buf),
        auth,
        limits,
        training_slots: 1,
        assign_threads: 2,
        tls: None,
        device: dekm_trainer::device::DeviceChoice::Cpu,
        embedder: None,
    }
}

pub(crate) fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub(crate) fn admin<T>(msg: T) -> Request<T> {
    with_token(msg, ADMIN)
}

pub(crate) fn client<T>(msg: T) -> Request<T> {
    with_token(msg, CLIENT)
}

pub(crate) fn samples(rows: &[Vec<f32>]) -> Vec<pb::Sample> {
    rows.iter()
        .map(|r| pb::Sample { values: r.clone() })
        .collect()
}

/// What the edge crate computes locally for `rows` with the bundle `bytes`.
pub(crate) fn local(bytes: &[u8], rows: &[Vec<f32>]) -> Vec<pb::Assignment> {
    let model = Model::from_parts(&ModelParts::from_bundle(bytes).unwrap()).unwrap();
    let mut s = model.session();
    rows.iter()
        .map(|r| {
            let a = s.assign(r).unwrap();
            pb::Assignment {
                cluster: a.cluster,
                distance: a.distance,
                margin: a.margin,
                score: a.score,
                outlier: a.outlier,
            }
        })
        .collect()
}

pub(crate) fn train_request(epochs: u32, activate: bool) -> pb::TrainRequest {
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

/// A finite request stream for a client-streaming call.
/// Reads a Train stream until its job is pretraining (running, with a long way to go) and
/// returns the job's id.
pub(crate) async fn pretraining_job(stream: &mut tonic::Streaming<pb::Progress>) -> String {
    loop {
        let p = stream
            .message()
            .await
            .unwrap()
            .expect("the stream ended before pretraining");
        if p.phase() == pb::Phase::Pretraining {
            return p.job_id;
        }
    }
}

pub(crate) fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl tonic::IntoStreamingRequest<Message = T> {
    tokio_stream::iter(items)
}

/// The status code of a failed call.
pub(crate) fn code<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
) -> (Code, String) {
    let e = r.expect_err("the call must fail");
    (e.code(), e.message().to_string())
}

/// A server with both tokens, small limits and a data root holding `ok.csv` and the
/// recording `rec.csv` (`time, x, y`: 300 readings of two regimes alternating every 50): what
/// the bad-request tests send their requests to.
pub(crate) struct Strict {
    pub(crate) server: Running,
    pub(crate) ch: Channel,
    _store: TempDir,
    _data: TempDir,
}

impl Strict {
    pub(crate) async fn start() -> Self {
        let store = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("ok.csv"), "1,2\n3,4\n").unwrap();
        let mut rec = String::from("time,x,y\n");
        for t in 0..300 {
            let (level, f) = if (t / 50) % 2 == 0 {
                (0.0, 0.3)
            } else {
                (5.0, 1.1)
            };
            let x = level + (f * t as f32).sin();
            rec += &format!("{t},{x},{}\n", -level + (0.5 * t as f32).cos());
        }
        std::fs::write(data.path().join("rec.csv"), rec).unwrap();
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
        Self {
            server,
            ch,
            _store: store,
            _data: data,
        }
    }

    /// Publishes the edge crate's dense fixture model as the active one: its id and bundle.
    pub(crate) async fn publish_fixture(&self) -> (String, Vec<u8>) {
        self.publish(dekm_edge::model::fixture::dense(1).to_bundle())
            .await
    }

    /// Publishes and activates `bundle`: its id and the bundle.
    pub(crate) async fn publish(&self, bundle: Vec<u8>) -> (String, Vec<u8>) {
        let id = pb::registry_client::RegistryClient::new(self.ch.clone())
            .publish_model(admin(pb::PublishModelRequest {
                bundle: bundle.clone(),
                activate: true,
            }))
            .await
            .unwrap()
            .into_inner()
            .id;
        (id, bundle)
    }

    /// Publishes and activates the fixture read as a stream model: channels a and b, windows
    /// of 3 readings every 2.
    pub(crate) async fn publish_stream_fixture(&self) -> (String, Vec<u8>) {
        let parts = dekm_edge::model::fixture::dense(2);
        let mut meta = parts.meta().clone();
        meta.stream = Some(dekm_shared::StreamSpec {
            channels: vec!["a".into(), "b".into()],
            window: 3,
            hop: 2,
        });
        let bundle = ModelParts::new(meta, parts.tensors().to_vec())
            .unwrap()
            .to_bundle();
        self.publish(bundle).await
    }

    pub(crate) async fn stop(self) {
        drop(self.ch);
        self.server.stop().await;
    }
}

/// An `Assign` request with the client token.
pub(crate) fn assign(model_id: &str, rows: Vec<Vec<f32>>) -> Request<pb::AssignRequest> {
    client(pb::AssignRequest {
        model_id: model_id.into(),
        samples: samples(&rows),
        readings: vec![],
        texts: vec![],
    })
}
