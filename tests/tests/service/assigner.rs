//! `dekm.v1.Assigner`: every bad request gets its status code, in a call and in a stream;
//! readings for a stream model are cut into windows as a device cuts them, across a stream's
//! requests.

use dekm_edge::{Model, ModelParts, StreamSession};
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
                    readings: vec![],
                    texts: vec![],
                },
                pb::AssignRequest {
                    model_id: id.clone(),
                    samples: samples(&[vec![1.0; 2]]),
                    readings: vec![],
                    texts: vec![],
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
                readings: vec![],
                texts: vec![],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_are_windowed_like_a_device_across_a_stream() {
    let srv = Strict::start().await;
    let mut assigner = AssignerClient::new(srv.ch.clone());
    let (plain, _) = srv.publish_fixture().await;
    let (id, bundle) = srv.publish_stream_fixture().await;
    let readings: Vec<Vec<f32>> = (0..7)
        .map(|t| vec![t as f32 * 0.3, 1.0 - t as f32 * 0.1])
        .collect();
    // What a device computes for the same readings.
    let model = Model::from_parts(&ModelParts::from_bundle(&bundle).unwrap()).unwrap();
    let mut device = StreamSession::<'_, 64>::new(&model).unwrap();
    let want: Vec<(u64, u32, f32)> = readings
        .iter()
        .filter_map(|r| device.push(r).unwrap())
        .map(|w| (w.start, w.assignment.cluster, w.assignment.score))
        .collect();
    assert_eq!(want.iter().map(|w| w.0).collect::<Vec<_>>(), [0, 2, 4]);
    let got = |r: &pb::AssignResponse| -> Vec<(u64, u32, f32)> {
        r.window_starts
            .iter()
            .zip(&r.assignments)
            .map(|(&s, a)| (s, a.cluster, a.score))
            .collect()
    };
    let reading_req = |model: &str, rows: &[Vec<f32>]| pb::AssignRequest {
        model_id: model.into(),
        samples: vec![],
        readings: samples(rows),
        texts: vec![],
    };

    // One call: its readings alone.
    let one = assigner
        .assign(client(reading_req(&id, &readings)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got(&one), want);

    // A stream of 4 + 3 readings: the window spanning both requests is assigned too.
    let mut s = assigner
        .assign_stream(with_token(
            tokio_stream::iter(vec![
                reading_req(&id, &readings[..4]),
                reading_req(&id, &readings[4..]),
            ]),
            CLIENT,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = got(&s.message().await.unwrap().unwrap());
    streamed.extend(got(&s.message().await.unwrap().unwrap()));
    assert_eq!(streamed, want);

    // Bad requests.
    let mut both = reading_req(&id, &readings);
    both.samples = samples(&readings[..1]);
    let mut short = readings.clone();
    short[1] = vec![1.0];
    for (req, want, needle) in [
        (
            both,
            Code::InvalidArgument,
            "one of samples, readings or texts",
        ),
        (reading_req(&id, &short), Code::InvalidArgument, "reading 1"),
        (
            reading_req(&plain, &readings),
            Code::FailedPrecondition,
            "not trained on a stream",
        ),
        (
            reading_req(&id, &vec![vec![0.0, 0.0]; 17]),
            Code::ResourceExhausted,
            "the limit is 16",
        ),
    ] {
        let (c, m) = code(assigner.assign(client(req)).await);
        assert_eq!(c, want, "{m}");
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
    }
    let info = pb::registry_client::RegistryClient::new(srv.ch.clone())
        .get_model(admin(pb::GetModelRequest {
            model_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.channels, info.window, info.hop),
        (vec!["a".to_string(), "b".to_string()], 3, 2)
    );
    drop(assigner);
    srv.stop().await;
}
