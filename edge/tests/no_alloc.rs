//! Assigning a sample allocates nothing: a counting global allocator watches a session assign
//! a stream of conv and dense samples (and reject a bad one) after its buffers were made, with
//! f32 and int8 encoders, and a stream session take readings and assign their windows.
// A global allocator must be an `unsafe impl`; it only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use dekm_edge::{Model, ModelParts, NamedTensor, StreamSession};
use dekm_shared::{
    EncoderSpec, FORMAT_VERSION, ImageShape, ModelMeta, Neighbours, OutlierScore, StreamSpec, names,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn parts(spec: EncoderSpec, stream: Option<StreamSpec>, score: OutlierScore) -> ModelParts {
    let levels = [0.5f32, 0.9, 1.0];
    let k = 3;
    let mut state = 5u32;
    let tensors = names::expected_tensors(&spec, k, levels.len(), score)
        .unwrap()
        .into_iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let data = match t.name.as_str() {
                names::QUANTILE_LEVELS => levels.to_vec(),
                names::INPUT_SCALE => vec![1.0 / 255.0; n],
                _ => (0..n)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (state >> 8) as f32 / (1u32 << 24) as f32 * 0.2
                    })
                    .collect(),
            };
            NamedTensor {
                name: t.name,
                shape: t.shape,
                data,
            }
        })
        .collect();
    let meta = ModelMeta {
        format_version: FORMAT_VERSION,
        encoder: spec,
        k,
        threshold_quantile: 0.9,
        outlier_score: score,
        stream,
        spectrum: None,
        weights: dekm_shared::Weights::F32,
        embedder: None,
        dataset: "test".into(),
        samples: 0,
        seed: 0,
        metrics: None,
        created_unix: 0,
        trainer_version: "test".into(),
    };
    ModelParts::new(meta, tensors).unwrap()
}

fn model(spec: EncoderSpec, stream: Option<StreamSpec>, score: OutlierScore) -> Model {
    Model::from_parts(&parts(spec, stream, score)).unwrap()
}

/// The same model with int8 weights, run in integers.
fn int8(spec: EncoderSpec, score: OutlierScore) -> Model {
    let parts = parts(spec, None, score).to_int8().unwrap();
    let m = Model::from_parts(&parts).unwrap();
    assert!(m.encoder().int8_kernel().is_some());
    m
}

#[test]
fn a_session_assigns_without_allocating() {
    let conv = model(
        EncoderSpec::paper_conv(
            ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            10,
        ),
        None,
        OutlierScore::Mahalanobis,
    );
    let dense = model(
        EncoderSpec::paper_dense(12, 4),
        None,
        OutlierScore::Mahalanobis,
    );
    let knn = OutlierScore::Knn(Neighbours {
        neighbours: 5,
        references: 300,
    });
    let neighbours = model(EncoderSpec::paper_dense(12, 4), None, knn);
    let image = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let conv8 = int8(
        EncoderSpec::paper_conv(image, 10),
        OutlierScore::Mahalanobis,
    );
    let dense8 = int8(EncoderSpec::paper_dense(12, 4), knn);
    let portable8 = conv8
        .clone()
        .with_int8_kernel(dekm_edge::Int8Kernel::Portable)
        .unwrap();
    for m in [&conv, &dense, &neighbours, &conv8, &dense8, &portable8] {
        let mut session = m.session();
        let samples: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                (0..m.input_len())
                    .map(|j| ((i * 31 + j) % 256) as f32)
                    .collect()
            })
            .collect();
        session.assign(&samples[0]).unwrap();
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let mut clusters = 0u32;
        for s in &samples {
            clusters += session.assign(s).unwrap().cluster;
        }
        let bad = session.assign(&samples[0][1..]);
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        assert!(bad.is_err(), "a short sample is rejected");
        assert_eq!(after - before, 0, "allocations while assigning");
        std::hint::black_box(clusters);
    }

    // 3 channels x 4 readings, a window every 2 readings.
    let spec = StreamSpec {
        channels: vec!["x".into(), "y".into(), "z".into()],
        window: 4,
        hop: 2,
    };
    let streaming = model(
        EncoderSpec::paper_dense(12, 4),
        Some(spec),
        OutlierScore::Mahalanobis,
    );
    let mut session = StreamSession::<'_, 64>::new(&streaming).unwrap();
    let readings: Vec<[f32; 3]> = (0..50).map(|t| [t as f32, (t % 7) as f32, 3.0]).collect();
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let mut windows = 0;
    for r in &readings {
        windows += usize::from(session.push(r).unwrap().is_some());
    }
    let bad = session.push(&[f32::NAN, 0.0, 0.0]);
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    assert!(bad.is_err(), "a NaN reading is refused");
    assert_eq!(windows, 24, "windows at readings 4, 6, ..., 50");
    assert_eq!(after - before, 0, "allocations while streaming");
}
