//! The critic's written-out input gradient and WGAN-GP's penalty on it.

use super::*;

fn image() -> EncoderSpec {
    let input = ImageShape {
        channels: 2,
        height: 9,
        width: 9,
    };
    EncoderSpec::paper_conv(input, 3)
}

/// A small copy of ClusterGAN's own networks: 4x4 convolutions padded by a pixel (12 → 6 →
/// 3, so the flattened map's order matters), a hidden dense layer, leaky ReLU.
fn paper_like() -> EncoderSpec {
    use dekm_shared::{ConvSpec, Padding};
    let conv = |filters| ConvSpec {
        filters,
        kernel: 4,
        stride: 2,
        padding: Padding::Pixels(1),
    };
    EncoderSpec::Conv {
        input: ImageShape {
            channels: 2,
            height: 12,
            width: 12,
        },
        convs: vec![conv(5), conv(7)],
        hidden: vec![9],
        activation: Activation::LeakyRelu,
        latent: 3,
        softmax_tail: 0,
    }
}

/// Three samples of `spec` in `[0, 1)`, spread without a pattern the layers could align to.
fn samples(spec: &EncoderSpec, dtype: DType) -> Tensor {
    let n = spec.input_len();
    let xs: Vec<f64> = (0..3 * n)
        .map(|i| ((i * 37) % 101) as f64 / 101.0)
        .collect();
    Tensor::from_vec(xs, (3, n), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// The written-out input gradient is candle's own gradient of the logits, on the fast
/// kernels, candle's and a dense stack.
#[test]
fn input_gradient_is_the_logits_gradient() {
    let cases = [
        (image(), ConvBackend::Fast),
        (image(), ConvBackend::Candle),
        (image(), ConvBackend::Gemm),
        (EncoderSpec::paper_dense(7, 3), ConvBackend::Fast),
        (paper_like(), ConvBackend::Fast),
        (paper_like(), ConvBackend::Candle),
        (paper_like(), ConvBackend::Gemm),
    ];
    for (spec, backend) in cases {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let d = Discriminator::new(&spec, &vb, backend).unwrap();
        let xs = candle_core::Var::from_tensor(&samples(&spec, DType::F32)).unwrap();
        let grads = d
            .forward(&xs)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let want = grads.get(&xs).unwrap();
        let got = d.input_gradient(&xs).unwrap();
        assert_eq!(got.dims(), want.dims());
        let err = scalar(&(&got - want).unwrap().abs().unwrap().max_all().unwrap());
        let scale = scalar(&want.abs().unwrap().max_all().unwrap());
        assert!(
            scale > 1e-4,
            "{backend:?}: a gradient worth checking ({scale})"
        );
        assert!(err <= 1e-4 * scale, "{backend:?}: {err} against {scale}");
    }
}

/// The penalty's gradient with respect to every weight at once, along a random direction,
/// is its central difference quotient, in f64 with a step small enough to flip none of the
/// leaky ReLUs' slopes (a flip is a jump in the penalty that the quotient would divide by
/// the step: 1e-5 flipped some of the dense stack's 9,000 units).
#[test]
fn penalty_gradient_matches_its_difference_quotient() {
    let cases = [
        (image(), ConvBackend::Candle),
        (image(), ConvBackend::Gemm),
        (EncoderSpec::paper_dense(7, 3), ConvBackend::Candle),
        (paper_like(), ConvBackend::Candle),
        (paper_like(), ConvBackend::Gemm),
    ];
    for (spec, backend) in cases {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let d = Discriminator::new(&spec, &vb, backend).unwrap();
        let xs = samples(&spec, DType::F64);
        let penalty = d.gradient_penalty(&xs).unwrap();
        let grads = penalty.backward().unwrap();
        let vars = vm.all_vars();
        let mut r = crate::rng(7, 0);
        let dirs: Vec<Tensor> = vars
            .iter()
            .map(|v| {
                let n = v.elem_count();
                let u: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut r)).collect();
                Tensor::from_vec(u, v.shape(), &Device::Cpu).unwrap()
            })
            .collect();
        let along: f64 = vars
            .iter()
            .zip(&dirs)
            .map(|(v, u)| match grads.get(v) {
                Some(g) => scalar(&(g * u).unwrap().sum_all().unwrap()),
                None => 0.0,
            })
            .sum();
        let h = 1e-8;
        let at = |step: f64| {
            let base: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
            for ((v, u), w) in vars.iter().zip(&dirs).zip(&base) {
                v.set(&(w + (u * step).unwrap()).unwrap()).unwrap();
            }
            let p = scalar(&d.gradient_penalty(&xs).unwrap());
            for (v, w) in vars.iter().zip(&base) {
                v.set(w).unwrap();
            }
            p
        };
        let quotient = (at(h) - at(-h)) / (2.0 * h);
        assert!(along.abs() > 1e-3, "a slope worth checking: {along}");
        let err = (quotient - along).abs();
        assert!(
            err <= 1e-4 * along.abs(),
            "{spec:?} {backend:?}: {quotient} against {along}"
        );
    }
}

/// Adam on the penalty alone brings the critic's slope at the samples to one: the weights
/// receive the penalty's gradient through the written-out input gradient. At the paper's
/// N(0, 0.02) draw the slope starts near zero and the penalty near one.
#[test]
fn the_penalty_trains_the_critic_to_slope_one() {
    let spec = image();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let d = Discriminator::new(&spec, &vb, ConvBackend::Fast).unwrap();
    init_weights(&vm, 3).unwrap();
    let vars = vm.data().lock().unwrap().clone().into_iter().collect();
    let mut opt = crate::optim::Adam::with_betas(vars, 1e-3, (0.5, 0.9)).unwrap();
    let xs = samples(&spec, DType::F32);
    let before = scalar(&d.gradient_penalty(&xs).unwrap());
    for _ in 0..100 {
        opt.step(&d.gradient_penalty(&xs).unwrap().backward().unwrap())
            .unwrap();
    }
    let after = scalar(&d.gradient_penalty(&xs).unwrap());
    assert!(before > 0.9, "slope near zero at the start: {before}");
    assert!(after < 0.01, "penalty {before} -> {after}");
}

/// The fast kernels' adjoint trains the critic as candle's transposed convolution does:
/// the same penalty and the same gradient for every weight.
#[test]
fn fast_penalty_matches_candles() {
    for spec in [image(), paper_like()] {
        fast_penalty_matches_candles_on(&spec);
    }
}

fn fast_penalty_matches_candles_on(spec: &EncoderSpec) {
    let spec = spec.clone();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let fast = Discriminator::new(&spec, &vb, ConvBackend::Fast).unwrap();
    let reference = Discriminator::new(&spec, &vb, ConvBackend::Candle).unwrap();
    let xs = samples(&spec, DType::F32);
    let (a, b) = (
        fast.gradient_penalty(&xs).unwrap(),
        reference.gradient_penalty(&xs).unwrap(),
    );
    assert!((scalar(&a) - scalar(&b)).abs() <= 1e-5 * scalar(&b).abs().max(1.0));
    let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
    for var in vm.all_vars() {
        let (Some(x), Some(y)) = (ga.get(&var), gb.get(&var)) else {
            // Biases reach the input gradient only through the slopes: no gradient.
            assert!(ga.get(&var).is_none() && gb.get(&var).is_none());
            continue;
        };
        let scale = scalar(&y.abs().unwrap().max_all().unwrap());
        let err = scalar(&(x - y).unwrap().abs().unwrap().max_all().unwrap());
        assert!(err <= 1e-4 * (1.0 + scale), "gradient {var:?}: {err}");
    }
}

/// One set of weights means the same networks on the CPU's kernels, the GPU's and candle's:
/// the generator's samples and the discriminator's logits agree, for a feature map of more
/// than one pixel, whose flattening order matters.
#[test]
fn networks_agree_across_backends() {
    for spec in [image(), paper_like()] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let code = spec.clone().with_latent(4);
        let nets = |backend| {
            (
                Generator::new(&code, &vb, backend, true).unwrap(),
                Discriminator::new(&spec, &vb, backend).unwrap(),
            )
        };
        let (slow, slow_d) = nets(ConvBackend::Candle);
        let others = [ConvBackend::Fast, ConvBackend::Gemm].map(|b| (b, nets(b)));
        init_weights(&vm, 5).unwrap();
        let prior = Prior {
            noise: 2,
            k: 2,
            noise_sd: NOISE_SD,
        };
        let z = prior
            .draw(&[0, 1, 1, 0, 1], &mut crate::rng(1, 0), &Device::Cpu)
            .unwrap();
        let xs = samples(&spec, DType::F32);
        let (want, want_d) = (slow.forward(&z).unwrap(), slow_d.forward(&xs).unwrap());
        let size = scalar(&want_d.abs().unwrap().max_all().unwrap());
        for (backend, (g, d)) in others {
            let a = g.forward(&z).unwrap();
            let err = scalar(&(&a - &want).unwrap().abs().unwrap().max_all().unwrap());
            assert!(
                err < 1e-5,
                "{spec:?} {backend:?}: generators differ by {err}"
            );
            let a = d.forward(&xs).unwrap();
            let err = scalar(&(&a - &want_d).unwrap().abs().unwrap().max_all().unwrap());
            assert!(
                err <= 1e-5 * size.max(1e-3),
                "{spec:?} {backend:?}: logits differ by {err} of {size}"
            );
        }
    }
}
