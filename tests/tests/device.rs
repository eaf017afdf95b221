//! Where training runs: a CPU build refuses a GPU with the reason, every run records the device
//! it used, the GPU's convolution layers train on the CPU as candle's own do, and (where a
//! GPU answers) the MNIST slice trained on CUDA matches the CPU's run and
//! its export assigns on the edge runtime as the trainer assigns it.

mod common;

use dekm_edge::Model;
use dekm_edge::file::read_parts;
use dekm_trainer::data::{DataSource, LoadOptions, load};
use dekm_trainer::device::DeviceChoice;
use dekm_trainer::export::read_model;
use dekm_trainer::model::ConvBackend;
use dekm_trainer::pipeline::{assign, latent_on, train_and_export};
use dekm_trainer::train::{RunOptions, TrainConfig};

#[cfg(not(feature = "cuda"))]
#[test]
fn a_cpu_build_refuses_cuda_and_writes_nothing() {
    let ds = common::synthetic(3, 300, 5);
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        device: DeviceChoice::Cuda(0),
        ..common::quick_config(3)
    };
    let err = train_and_export(&ds, &cfg, &RunOptions::default(), out.path())
        .err()
        .expect("a CPU build cannot train on CUDA")
        .to_string();
    assert!(err.contains("device cuda:0"), "{err}");
    assert!(err.contains("built without CUDA"), "{err}");
    assert!(err.contains("--device cpu"), "{err}");
    assert!(!out.path().join("model.safetensors").exists());
}

#[test]
fn a_run_records_the_device_it_used() {
    let ds = common::synthetic(3, 300, 5);
    let out = tempfile::tempdir().unwrap();
    let cfg = common::quick_config(3);
    assert_eq!(cfg.device, DeviceChoice::Auto);
    let res = train_and_export(&ds, &cfg, &RunOptions::default(), out.path()).unwrap();
    let used = res.trained.config.device;
    assert_ne!(used, DeviceChoice::Auto, "auto is resolved");
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.path().join(f)).unwrap()).unwrap()
    };
    assert_eq!(read("config.json")["device"], used.to_string());
    assert_eq!(read("metrics.json")["config"]["device"], used.to_string());
    if used == DeviceChoice::Cpu {
        assert_eq!(read("config.json")["conv"], "fast");
    } else {
        assert_eq!(
            read("config.json")["conv"],
            "gemm",
            "a GPU runs the layers made of candle's conv2d"
        );
    }
}

/// Settings small enough for a test on the MNIST slice, on `device`.
fn slice_config(device: DeviceChoice) -> TrainConfig {
    TrainConfig {
        k: 10,
        epochs: 5,
        batch_size: 64,
        max_iter: 5,
        steps_per_iter: 30,
        seed: 0,
        device,
        ..Default::default()
    }
}

/// Trains the first `limit` MNIST images with `cfg`, exporting to `dir`.
fn mnist_slice(
    limit: usize,
    cfg: &TrainConfig,
    dir: &std::path::Path,
) -> dekm_trainer::pipeline::Outcome {
    let data = common::data_dir().expect("checked by the caller");
    let opts = LoadOptions {
        data_dir: Some(data),
        limit: Some(limit),
        ..Default::default()
    };
    let ds = load(&DataSource::Mnist, &opts).unwrap();
    train_and_export(&ds, cfg, &RunOptions::default(), dir).unwrap()
}

/// The GPU's layers (`gemm`) train on the CPU as candle's own layers do: the same forward
/// values, their backward pass written out instead of candle's, from the same weights and
/// batches, so each epoch's reconstruction loss agrees to float rounding (the fused kernels,
/// which sum in another order, differ from both by 1e-4 here; a wrong gradient by far more).
#[test]
fn the_gpus_layers_train_as_candles_own_do() {
    if common::data_dir().is_none() {
        eprintln!(
            "SKIPPED the_gpus_layers_train_as_candles_own_do: no MNIST under DEKM_DATA or ../shared/data"
        );
        return;
    }
    let run = |conv| {
        let cfg = TrainConfig {
            epochs: 2,
            max_iter: 1,
            steps_per_iter: 1,
            conv,
            ..slice_config(DeviceChoice::Cpu)
        };
        let dir = tempfile::tempdir().unwrap();
        mnist_slice(384, &cfg, dir.path()).trained
    };
    let (candle, gemm) = (run(ConvBackend::Candle), run(ConvBackend::Gemm));
    assert_eq!(gemm.config.conv, ConvBackend::Gemm);
    let (c, g) = (&candle.history.pretrain_loss, &gemm.history.pretrain_loss);
    eprintln!("MNIST 384, pretraining loss per epoch: candle {c:?}, gemm {g:?}");
    assert_eq!(c.len(), 2);
    assert!(c[1] < 0.9 * c[0], "the loss falls: {c:?}");
    for (a, b) in c.iter().zip(g) {
        assert!((a - b).abs() <= 1e-5 * a, "candle {c:?}, gemm {g:?}");
    }
}

#[test]
fn the_mnist_slice_trains_on_cuda_as_on_the_cpu() {
    let Some(data) = common::data_dir() else {
        eprintln!(
            "SKIPPED the_mnist_slice_trains_on_cuda_as_on_the_cpu: no MNIST under DEKM_DATA or ../shared/data"
        );
        return;
    };
    let gpu = match DeviceChoice::Cuda(0).open() {
        Ok((dev, _)) => dev,
        Err(e) => {
            eprintln!("SKIPPED the_mnist_slice_trains_on_cuda_as_on_the_cpu: {e}");
            return;
        }
    };
    let (cpu_dir, gpu_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cpu = mnist_slice(2000, &slice_config(DeviceChoice::Cpu), cpu_dir.path());
    let on_gpu = mnist_slice(2000, &slice_config(DeviceChoice::Cuda(0)), gpu_dir.path());
    assert_eq!(on_gpu.trained.config.device, DeviceChoice::Cuda(0));
    let (c, g) = (cpu.meta.metrics.unwrap(), on_gpu.meta.metrics.unwrap());
    eprintln!("MNIST 2000, CPU {c:?}, CUDA {g:?}");
    // Float sums run in another order on the GPU, so the partitions may differ by a few
    // samples near the boundaries, not more.
    for (name, a, b) in [
        ("ACC", c.acc, g.acc),
        ("NMI", c.nmi, g.nmi),
        ("ARI", c.ari, g.ari),
    ] {
        assert!((a - b).abs() <= 0.05, "{name}: CPU {a}, CUDA {b}");
    }

    // The GPU-trained export: the edge runtime assigns every sample as the trainer does, and
    // the trainer's own GPU embedding of the export agrees with the edge's latent vectors.
    let model = read_model(gpu_dir.path()).unwrap();
    let opts = LoadOptions {
        data_dir: Some(data),
        limit: Some(2000),
        ..Default::default()
    };
    let ds = load(&DataSource::Mnist, &opts).unwrap();
    let trainer = assign(&model, &ds).unwrap();
    let edge = Model::from_parts(&read_parts(gpu_dir.path()).unwrap()).unwrap();
    let mut session = edge.session();
    let d = edge.encoder().latent_dim();
    let z_gpu = latent_on(&model, &ds, &gpu).unwrap();
    let mut worst = 0f32;
    for (i, t) in trainer.iter().enumerate() {
        let a = session.assign(ds.sample(i)).unwrap();
        assert_eq!(a.cluster, t.cluster, "sample {i}");
        assert_eq!(a.outlier, t.outlier, "sample {i}");
        let z_edge = session.latent();
        for (x, y) in z_edge.iter().zip(&z_gpu[i * d..(i + 1) * d]) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst <= 1e-3, "GPU and edge latents differ by {worst}");
}
