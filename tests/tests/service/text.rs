//! Texts over gRPC: `Train` on documents (a `text:PATH` under the data root, or inline) embedded
//! by the server's `--embedder`; `Assign` on texts answering as embedding them locally and
//! assigning with the edge runtime does; and the refusals: texts for a vector model, a model of
//! another embedder, a server without one, blank texts, mixed requests.

use std::path::Path;

use candle_core::Device;
use dekm_embed::Embedder;
use dekm_embed::fixture::write_tiny_bert;
use dekm_proto::pb;
use dekm_server::{Auth, Limits};
use pb::assigner_client::AssignerClient;
use pb::training_client::TrainingClient;
use tonic::Code;

use crate::common;
use crate::harness::*;

/// A Train request for the corpus's topics with the quick settings.
fn text_train(data: pb::train_request::Data) -> pb::TrainRequest {
    let mut req = train_request(3, true);
    req.data = Some(data);
    req.settings.as_mut().unwrap().k = Some(2);
    req
}

/// Runs a Train call to its end: every progress message.
async fn follow(
    training: &mut TrainingClient<tonic::transport::Channel>,
    req: pb::TrainRequest,
) -> Vec<pb::Progress> {
    let mut stream = training.train(admin(req)).await.unwrap().into_inner();
    let mut all = Vec::new();
    while let Some(p) = stream.message().await.unwrap() {
        all.push(p);
    }
    all
}

fn texts_req(model_id: &str, texts: &[&str]) -> tonic::Request<pb::AssignRequest> {
    client(pb::AssignRequest {
        model_id: model_id.into(),
        texts: texts.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    })
}

fn tiny_bert(dir: &Path, name: &str, seed: u64) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir(&d).unwrap();
    write_tiny_bert(&d, seed).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_train_and_assign_over_grpc_as_the_embedder_and_edge_do() {
    let dir = tempfile::tempdir().unwrap();
    let (bert, other) = (
        tiny_bert(dir.path(), "bert", 3),
        tiny_bert(dir.path(), "other", 4),
    );
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    common::text_corpus(&data);
    std::fs::write(data.join("ok.csv"), "1,2\n3,4\n").unwrap();
    let store = dir.path().join("store");
    let mut cfg = config(
        &store,
        Auth::new(None, None),
        Limits::default(),
        Some(&data),
    );
    cfg.embedder = Some(bert.clone());
    let srv = Running::start_with(cfg).await;
    let ch = srv.channel().await;
    let mut training = TrainingClient::new(ch.clone());
    let mut assigner = AssignerClient::new(ch.clone());

    // A text data set under the data root, with its label column: embedded, then trained.
    let steps = follow(
        &mut training,
        text_train(pb::train_request::Data::Dataset(pb::DatasetRef {
            name: "text:docs.csv".into(),
            text_column: "body".into(),
            label_column: "topic".into(),
            ..Default::default()
        })),
    )
    .await;
    let last = steps.last().unwrap();
    assert_eq!(last.state(), pb::JobState::Succeeded, "{last:?}");
    assert!(last.metrics.is_some(), "labelled texts give metrics");
    // Embedding is reported as the loading phase's progress, up to all 60 texts.
    assert!(
        steps
            .iter()
            .any(|p| p.phase() == pb::Phase::Loading && p.step == 60 && p.steps == 60),
        "{steps:?}"
    );
    let model_id = last.model_id.clone();
    let info = pb::registry_client::RegistryClient::new(ch.clone())
        .get_model(client(pb::GetModelRequest {
            model_id: model_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let local_bert = Embedder::load(&bert, &Device::Cpu).unwrap();
    assert_eq!(
        (info.embedder.as_str(), info.embedder_sha256.as_str()),
        ("bert", local_bert.id().sha256.as_str())
    );

    // Assign texts: the server's answer is the local embedding assigned by the edge runtime.
    // The last text is longer than the fixture's 16 tokens and is reported as truncated.
    let long = "the cat is cute and the dog is cute and it rains today and the cat is cute";
    let texts = ["a cute dog", "it is cloudy", "the rain, sunny today", long];
    let answer = assigner
        .assign(texts_req("", &texts))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model_id, model_id);
    assert_eq!(answer.truncated, [3]);
    let bundle = pb::fleet_client::FleetClient::new(ch.clone())
        .fetch_model(client(pb::FetchModelRequest {
            device_id: "text-test".into(),
            current_model_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .bundle;
    let e = local_bert.embed(&texts, 32, &mut |_| {}).unwrap();
    let rows: Vec<Vec<f32>> = e.xs.chunks(e.dim).map(<[f32]>::to_vec).collect();
    assert_eq!(answer.assignments, local(&bundle, &rows));
    // Devices are sent vectors: the same model takes the embeddings as samples too.
    let as_vectors = assigner
        .assign(client(pb::AssignRequest {
            samples: samples(&rows),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(as_vectors.assignments, answer.assignments);

    // Inline texts with labels train as well.
    let (inline, topics): (Vec<String>, Vec<u32>) = common::topic_texts()
        .into_iter()
        .map(|(t, topic)| (t, u32::from(topic == "weather")))
        .unzip();
    let steps = follow(
        &mut training,
        text_train(pb::train_request::Data::Inline(pb::InlineData {
            texts: inline.clone(),
            labels: topics,
            ..Default::default()
        })),
    )
    .await;
    let last = steps.last().unwrap();
    assert_eq!(last.state(), pb::JobState::Succeeded, "{last:?}");
    assert!(last.metrics.is_some());

    // What a text server turns away.
    let vector_model = pb::registry_client::RegistryClient::new(ch.clone())
        .publish_model(client(pb::PublishModelRequest {
            bundle: dekm_edge::model::fixture::dense(1).to_bundle(),
            activate: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .id;
    let mixed = client(pb::AssignRequest {
        samples: samples(&rows[..1]),
        texts: vec!["a cat".into()],
        ..Default::default()
    });
    let inline_bad = |texts: Vec<String>, samples_: Vec<pb::Sample>| {
        text_train(pb::train_request::Data::Inline(pb::InlineData {
            samples: samples_,
            texts,
            labels: vec![],
        }))
    };
    for (got, want, needle) in [
        (
            code(assigner.assign(texts_req(&vector_model, &["a cat"])).await),
            Code::FailedPrecondition,
            "not trained on texts",
        ),
        (
            code(assigner.assign(texts_req("", &["a cat", "  "])).await),
            Code::InvalidArgument,
            "text 1 is blank",
        ),
        (
            code(assigner.assign(mixed).await),
            Code::InvalidArgument,
            "one of samples, readings or texts",
        ),
        (
            code(
                training
                    .train(admin(inline_bad(vec!["a cat".into(), "".into()], vec![])))
                    .await,
            ),
            Code::InvalidArgument,
            "inline text 1 is blank",
        ),
        (
            code(
                training
                    .train(admin(inline_bad(vec!["a cat".into()], samples(&rows[..1]))))
                    .await,
            ),
            Code::InvalidArgument,
            "samples or texts, not both",
        ),
        (
            code(
                training
                    .train(admin(text_train(pb::train_request::Data::Dataset(
                        pb::DatasetRef {
                            name: "csv:ok.csv".into(),
                            text_column: "body".into(),
                            ..Default::default()
                        },
                    ))))
                    .await,
            ),
            Code::InvalidArgument,
            "text_column applies to text:PATH",
        ),
    ] {
        assert_eq!(got.0, want, "{}", got.1);
        assert!(got.1.contains(needle), "{needle}: {}", got.1);
    }
    drop((training, assigner, ch));
    srv.stop().await;

    // The model on a server whose embedder has other weights: texts are refused by the
    // checksum, naming both embedders; vectors are still assigned.
    let mut cfg = config(
        &store,
        Auth::new(None, None),
        Limits::default(),
        Some(&data),
    );
    cfg.embedder = Some(other);
    let srv = Running::start_with(cfg).await;
    let mut assigner = AssignerClient::new(srv.channel().await);
    let (c, msg) = code(assigner.assign(texts_req(&model_id, &["a cat"])).await);
    assert_eq!(c, Code::FailedPrecondition, "{msg}");
    assert!(
        msg.contains(&local_bert.id().sha256) && msg.contains("other"),
        "{msg}"
    );
    drop(assigner);
    srv.stop().await;

    // And on a server without an embedder: neither texts to assign nor text data to train.
    let srv = Running::start(
        &store,
        Auth::new(None, None),
        Limits::default(),
        Some(&data),
    )
    .await;
    let ch = srv.channel().await;
    let (c, msg) = code(
        AssignerClient::new(ch.clone())
            .assign(texts_req(&model_id, &["a cat"]))
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("no sentence embedder"), "{msg}");
    let (c, msg) = code(
        TrainingClient::new(ch.clone())
            .train(admin(text_train(pb::train_request::Data::Inline(
                pb::InlineData {
                    texts: inline,
                    ..Default::default()
                },
            ))))
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("--embedder"), "{msg}");
    drop(ch);
    srv.stop().await;
}

/// More texts than the batch limit are refused before anything is embedded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_texts_are_refused() {
    let srv = Strict::start().await;
    let texts = ["a cat"; 9];
    let (c, msg) = code(
        AssignerClient::new(srv.ch.clone())
            .assign(texts_req("", &texts))
            .await,
    );
    assert_eq!(c, Code::ResourceExhausted, "{msg}");
    assert!(
        msg.contains("9 texts in one request; the limit is 8"),
        "{msg}"
    );
    srv.stop().await;
}
