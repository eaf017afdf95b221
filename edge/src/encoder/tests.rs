//! The encoder against direct loops over the exported layouts.

use super::*;
use alloc::collections::BTreeMap;
use dekm_shared::{Activation, ImageShape, POOL_EPS, TimePooling};

use super::conv::{conv_tiles, even_tiles};

/// Deterministic pseudo-random weights for every tensor of `spec`.
pub(super) fn weights(spec: &EncoderSpec) -> BTreeMap<String, Vec<f32>> {
    let mut state = 12345u32;
    let mut next = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    names::encoder_tensors(spec)
        .unwrap()
        .into_iter()
        .map(|t| {
            let n = t.shape.iter().product();
            (t.name, (0..n).map(|_| next() * 0.3).collect())
        })
        .collect()
}

/// Direct-loop reference in f64.
fn reference(spec: &EncoderSpec, w: &BTreeMap<String, Vec<f32>>, x: &[f32]) -> Vec<f64> {
    let slope = f64::from(spec.activation().slope());
    let act = |v: f64| if v > 0.0 { v } else { slope * v };
    let mut h: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    for (i, g) in spec.conv_geometry().unwrap().iter().enumerate() {
        let (wt, bs) = (
            &w[&format!("encoder.conv{i}.weight")],
            &w[&format!("encoder.conv{i}.bias")],
        );
        let (ci, ih, iw) = (g.input.channels, g.input.height, g.input.width);
        let (co, oh, ow) = (g.output.channels, g.output.height, g.output.width);
        let (kh, kw) = (g.kernel.height, g.kernel.width);
        let mut out = vec![0f64; co * oh * ow];
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = f64::from(bs[o]);
                    for c in 0..ci {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let iy = (oy * g.stride + ki) as isize - g.pad.height as isize;
                                let ix = (ox * g.stride + kj) as isize - g.pad.width as isize;
                                if iy < 0 || ix < 0 || iy as usize >= ih || ix as usize >= iw {
                                    continue;
                                }
                                let xv = h[(c * ih + iy as usize) * iw + ix as usize];
                                s += xv * f64::from(wt[((o * ci + c) * kh + ki) * kw + kj]);
                            }
                        }
                    }
                    out[(o * oh + oy) * ow + ox] = act(s);
                }
            }
        }
        h = out;
    }
    if spec.pooled()
        && let Some(g) = spec.conv_geometry().unwrap().last()
    {
        let steps = g.output.height * g.output.width;
        let mean = |c: &[f64]| c.iter().sum::<f64>() / steps as f64;
        let mut pooled: Vec<f64> = h.chunks_exact(steps).map(mean).collect();
        if spec.pooling() == TimePooling::MeanStd {
            let sd = h.chunks_exact(steps).map(|c| {
                let m = mean(c);
                let var = c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / steps as f64;
                (var + f64::from(POOL_EPS)).sqrt()
            });
            pooled = pooled.clone().into_iter().chain(sd).collect();
        }
        h = pooled;
    }
    let hidden = match spec {
        EncoderSpec::Dense { hidden, .. } | EncoderSpec::Conv { hidden, .. } => hidden.len(),
        EncoderSpec::Conv1d { .. } => 0,
    };
    for i in 0..hidden {
        h = affine(
            &w[&format!("encoder.dense{i}.weight")],
            &w[&format!("encoder.dense{i}.bias")],
            &h,
        )
        .into_iter()
        .map(act)
        .collect();
    }
    let mut z = affine(&w["encoder.latent.weight"], &w["encoder.latent.bias"], &h);
    let tail = spec.softmax_tail();
    if tail > 0 {
        let start = z.len() - tail;
        let code = &mut z[start..];
        let max = code.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = code.iter().map(|v| (v - max).exp()).sum();
        for v in code.iter_mut() {
            *v = (*v - max).exp() / sum;
        }
    }
    z
}

fn affine(w: &[f32], b: &[f32], x: &[f64]) -> Vec<f64> {
    b.iter()
        .zip(w.chunks_exact(x.len()))
        .map(|(&b, row)| {
            f64::from(b)
                + row
                    .iter()
                    .zip(x)
                    .map(|(&w, &x)| f64::from(w) * x)
                    .sum::<f64>()
        })
        .collect()
}

fn check(spec: EncoderSpec) {
    let w = weights(&spec);
    let enc = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
    let mut ws = enc.workspace();
    let mut z = vec![0f32; enc.latent_dim()];
    for s in 0..3 {
        let x: Vec<f32> = (0..enc.input_len())
            .map(|i| ((i * 7 + s * 13) % 17) as f32 / 17.0)
            .collect();
        enc.encode(&x, &mut ws, &mut z).unwrap();
        let want = reference(&spec, &w, &x);
        for (a, b) in z.iter().zip(&want) {
            assert!(
                (f64::from(*a) - b).abs() < 1e-4 * (1.0 + b.abs()),
                "{a} vs {b}"
            );
        }
    }
}

#[test]
fn paper_conv_encoder_matches_direct_loops() {
    let shape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    check(EncoderSpec::paper_conv(shape, 10));
}

#[test]
fn odd_multichannel_images_and_dense_encoders_match_direct_loops() {
    let shape = ImageShape {
        channels: 3,
        height: 13,
        width: 13,
    };
    check(EncoderSpec::paper_conv(shape, 4));
    check(EncoderSpec::Dense {
        input: 12,
        hidden: vec![9, 7],
        latent: 3,
        softmax_tail: 0,
    });
}

/// ClusterGAN's encoders end in a softmax over the cluster code: the probabilities match the
/// reference's, and the values before the code are left linear.
#[test]
fn a_softmax_tail_matches_direct_loops() {
    let shape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    check(EncoderSpec::paper_conv(shape, 14).with_softmax_tail(4));
    check(EncoderSpec::paper_dense(12, 5).with_softmax_tail(5));
}

#[test]
fn channels_that_are_not_whole_vectors_rectangles_and_no_convolution_match_direct_loops() {
    use dekm_shared::{ConvSpec, Padding};
    let input = ImageShape {
        channels: 2,
        height: 9,
        width: 7,
    };
    let conv = |filters, kernel, stride, padding| ConvSpec {
        filters,
        kernel,
        stride,
        padding,
    };
    check(EncoderSpec::Conv {
        input,
        convs: vec![
            conv(5, 3, 1, Padding::Same),
            conv(17, 2, 2, Padding::Valid),
            conv(40, 3, 1, Padding::Same),
        ],
        hidden: vec![],
        activation: Activation::Relu,
        latent: 3,
        softmax_tail: 0,
    });
    check(EncoderSpec::Conv {
        input,
        convs: vec![],
        hidden: vec![],
        activation: Activation::Relu,
        latent: 4,
        softmax_tail: 0,
    });
    check(leaky_with_hidden_layers(input).with_softmax_tail(2));
}

/// Hidden layers after the convolutions and a leaky ReLU on a multichannel rectangle, an even
/// kernel padded by a pixel.
fn leaky_with_hidden_layers(input: ImageShape) -> EncoderSpec {
    use dekm_shared::{ConvSpec, Padding};
    let conv = |filters, kernel, stride, padding| ConvSpec {
        filters,
        kernel,
        stride,
        padding,
    };
    EncoderSpec::Conv {
        input,
        convs: vec![
            conv(5, 4, 2, Padding::Pixels(1)),
            conv(17, 2, 1, Padding::Valid),
        ],
        hidden: vec![23, 9],
        activation: Activation::LeakyRelu,
        latent: 3,
        softmax_tail: 0,
    }
}

/// ClusterGAN's own encoder (4x4 convolutions padded by a pixel, a dense layer of 1,024,
/// leaky ReLU) against the direct loops, its negative activations included.
#[test]
fn clustergans_encoder_matches_direct_loops() {
    let shape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    check(EncoderSpec::clustergan_conv(shape, 40).with_softmax_tail(10));
}

#[test]
fn temporal_encoders_match_direct_loops() {
    use dekm_shared::{ConvSpec, Padding, SeriesShape};
    let series = |channels, length| SeriesShape { channels, length };
    for pooling in [
        TimePooling::Flatten,
        TimePooling::Mean,
        TimePooling::MeanStd,
    ] {
        check(EncoderSpec::paper_conv1d(series(6, 100), pooling, 8));
        check(EncoderSpec::paper_conv1d(series(12, 29), pooling, 4));
        check(EncoderSpec::paper_conv1d(series(1, 3), pooling, 2));
    }
    check(EncoderSpec::Conv1d {
        input: series(3, 17),
        convs: vec![
            ConvSpec {
                filters: 5,
                kernel: 4,
                stride: 3,
                padding: Padding::Same,
            },
            ConvSpec {
                filters: 18,
                kernel: 2,
                stride: 1,
                padding: Padding::Valid,
            },
        ],
        pooling: TimePooling::Mean,
        latent: 3,
        softmax_tail: 0,
    });
}

/// The one-lane path (what a CPU whose vectors do not divide 16 lanes would run) equals the
/// dispatched SIMD path layer by layer.
#[test]
fn one_lane_and_simd_tiles_agree() {
    let input = ImageShape {
        channels: 3,
        height: 11,
        width: 11,
    };
    let spec = EncoderSpec::paper_conv(input, 4);
    let w = weights(&spec);
    let enc = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
    let Run::F32 {
        body: Body::Conv { convs, .. },
        ..
    } = &enc.run
    else {
        unreachable!()
    };
    let (len, zero) = enc.sizes;
    let mut x: Vec<f32> = (0..len).map(|i| (i % 13) as f32 / 13.0).collect();
    x[zero..].fill(0.0);
    for conv in convs {
        // On other targets `Direct` is the only kind, whence the allowance.
        #[allow(clippy::infallible_destructuring_match)]
        let conv = match conv {
            ConvLayer::Direct(conv) => conv,
            #[cfg(target_arch = "x86_64")]
            ConvLayer::Winograd(_) => panic!("11x11 images have no layer worth Winograd's"),
        };
        let (mut simd, mut one) = (vec![0.0; len], vec![0.0; len]);
        let mut scratch = vec![0.0; conv.scratch_len()];
        conv.forward(&x, &mut scratch, &mut simd);
        let mut gathered = vec![0.0; conv.scratch_len()];
        conv_tiles(
            pulp::Scalar::new(),
            conv,
            conv.source(&x, &mut gathered),
            &mut one,
            conv.pixels(),
        );
        for (a, b) in simd.iter().zip(&one) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        assert!(simd.iter().any(|&v| v > 0.0));
        x = simd;
    }
}

/// The convolutions run as [`Convolutions::Fastest`] picks (Winograd's algorithm for MNIST's
/// second layer with AVX2 or AVX-512) give the latents of the direct ones to float rounding, and
/// the counted multiply-adds say which ran.
#[test]
fn winograd_and_direct_convolutions_agree() {
    // The paper's MNIST encoder.
    let spec = specs().swap_remove(0);
    let w = weights(&spec);
    let build = |method| {
        Encoder::with_convolutions(&spec, |n| w.get(n).map(Vec::as_slice), method).unwrap()
    };
    let (fastest, direct) = (build(Convolutions::Fastest), build(Convolutions::Direct));
    assert_eq!(
        direct.executed_flops_per_sample(),
        direct.flops_per_sample()
    );
    let winograd = cfg!(target_arch = "x86_64") && conv::simd_shape().0 >= 8;
    assert_eq!(
        fastest.executed_flops_per_sample() < fastest.flops_per_sample(),
        winograd
    );
    let (mut a, mut b) = (fastest.workspace(), direct.workspace());
    let (mut za, mut zb) = (vec![0.0; 10], vec![0.0; 10]);
    for x in samples(spec.input_len()) {
        fastest.encode(&x, &mut a, &mut za).unwrap();
        direct.encode(&x, &mut b, &mut zb).unwrap();
        for (p, q) in za.iter().zip(&zb) {
            assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{p} vs {q}");
        }
        assert!(za.iter().any(|&v| v != 0.0));
    }
}

/// Tiles cover every pixel once, in order, none longer than asked, none more than one shorter
/// than another.
#[test]
fn even_tiles_cover_the_pixels_evenly() {
    assert_eq!(
        even_tiles(49, 6).collect::<Vec<_>>(),
        [
            (0, 6),
            (6, 6),
            (12, 6),
            (18, 6),
            (24, 5),
            (29, 5),
            (34, 5),
            (39, 5),
            (44, 5)
        ]
    );
    assert_eq!(even_tiles(0, 6).count(), 0);
    for pixels in 1..100 {
        for most in 1..8 {
            let tiles: Vec<_> = even_tiles(pixels, most).collect();
            assert_eq!(tiles.len(), pixels.div_ceil(most));
            let mut next = 0;
            for &(p0, p) in &tiles {
                assert_eq!(p0, next);
                assert!(p >= 1 && p <= most);
                next += p;
            }
            assert_eq!(next, pixels);
            let (lo, hi) = tiles
                .iter()
                .fold((usize::MAX, 0), |(l, h), &(_, p)| (l.min(p), h.max(p)));
            assert!(hi - lo <= 1, "{pixels} / {most}: {tiles:?}");
        }
    }
}

#[test]
fn missing_or_mis_sized_weights_and_inputs_are_named() {
    let spec = EncoderSpec::paper_dense(6, 2);
    let mut w = weights(&spec);
    w.remove("encoder.latent.bias");
    let err = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap_err();
    assert_eq!(err, EncoderError::Missing("encoder.latent.bias".into()));
    let mut w = weights(&spec);
    w.get_mut("encoder.dense0.weight").unwrap().pop();
    let err = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap_err();
    assert!(
        matches!(err, EncoderError::Length { ref what, .. } if what == "encoder.dense0.weight")
    );
    let mut w = weights(&spec);
    w.get_mut("encoder.dense1.bias").unwrap()[3] = f32::NAN;
    let err = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap_err();
    assert!(matches!(err, EncoderError::NotFinite { index: 3, .. }));
    let w = weights(&spec);
    let enc = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
    let mut ws = enc.workspace();
    let err = enc.encode(&[0.0; 5], &mut ws, &mut [0.0; 2]).unwrap_err();
    assert!(matches!(
        err,
        EncoderError::Length {
            expected: 6,
            got: 5,
            ..
        }
    ));
}

/// Every spec the tests above run, for the int8 checks.
pub(super) fn specs() -> Vec<EncoderSpec> {
    use dekm_shared::{ConvSpec, Padding, SeriesShape};
    let image = |channels, side| ImageShape {
        channels,
        height: side,
        width: side,
    };
    let conv = |filters, kernel, stride, padding| ConvSpec {
        filters,
        kernel,
        stride,
        padding,
    };
    let odd = ImageShape {
        channels: 2,
        height: 9,
        width: 7,
    };
    let mut specs = vec![
        EncoderSpec::paper_conv(image(1, 28), 10),
        EncoderSpec::paper_conv(image(3, 13), 4),
        EncoderSpec::Conv {
            input: odd,
            convs: vec![
                conv(5, 3, 1, Padding::Same),
                conv(17, 2, 2, Padding::Valid),
                conv(40, 3, 1, Padding::Same),
            ],
            hidden: vec![],
            activation: Activation::Relu,
            latent: 3,
            softmax_tail: 0,
        },
        EncoderSpec::Conv {
            input: odd,
            convs: vec![],
            hidden: vec![],
            activation: Activation::Relu,
            latent: 4,
            softmax_tail: 0,
        },
        leaky_with_hidden_layers(odd),
        EncoderSpec::clustergan_conv(image(1, 28), 12),
        EncoderSpec::Dense {
            input: 13,
            hidden: vec![9, 70],
            latent: 3,
            softmax_tail: 0,
        },
        EncoderSpec::paper_dense(96, 10),
    ];
    for pooling in [
        TimePooling::Flatten,
        TimePooling::Mean,
        TimePooling::MeanStd,
    ] {
        let series = SeriesShape {
            channels: 6,
            length: 100,
        };
        specs.push(EncoderSpec::paper_conv1d(series, pooling, 8));
    }
    specs
}

/// `spec`'s int8 encoder (weights quantized per row from [`weights`]) and the f32 weights it
/// stands for (the bytes widened back).
pub(super) fn int8_encoder(spec: &EncoderSpec) -> (Encoder, BTreeMap<String, Vec<f32>>) {
    let shapes: BTreeMap<String, Vec<usize>> = names::encoder_tensors(spec)
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    let mut w = weights(spec);
    let q: BTreeMap<String, Int8Tensor> = w
        .iter()
        .filter(|(n, _)| crate::quantize::is_quantized(n))
        .map(|(n, v)| (n.clone(), Int8Tensor::quantize(n, &shapes[n], v)))
        .collect();
    for (n, t) in &q {
        w.insert(n.clone(), t.widen().unwrap());
    }
    let enc = Encoder::quantized(spec, |n| w.get(n).map(Vec::as_slice), |n| q.get(n)).unwrap();
    (enc, w)
}

/// Samples with negative and positive values, and one all zero.
fn samples(len: usize) -> Vec<Vec<f32>> {
    (0..3)
        .map(|s| {
            (0..len)
                .map(|i| ((i * 7 + s * 13) % 17) as f32 / 17.0 - 0.2 * s as f32)
                .collect()
        })
        .chain([vec![0.0; len]])
        .collect()
}

/// With the weights fixed, an int8 encoder's only error is its 8-bit activations: its latents
/// stay within a few percent of the f32 pass over the same (widened) weights. (Measured on
/// these random weights: under 1% of the largest latent on the paper's MNIST encoder, up to 10%
/// on the small odd ones, where random filters cancel; a layout error is off by the whole.)
#[test]
fn int8_encoders_follow_their_f32_weights() {
    for (i, spec) in specs().into_iter().enumerate() {
        let tolerance = if i == 0 { 0.01 } else { 0.12 };
        let (enc, w) = int8_encoder(&spec);
        let mut ws = enc.workspace();
        let mut z = vec![0f32; enc.latent_dim()];
        for x in samples(enc.input_len()) {
            enc.encode(&x, &mut ws, &mut z).unwrap();
            let want = reference(&spec, &w, &x);
            let size = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (a, b) in z.iter().zip(&want) {
                assert!(
                    (f64::from(*a) - b).abs() <= tolerance * size + 1e-6,
                    "{spec:?}: {a} vs {b} (largest {size})"
                );
            }
        }
        let f = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
        assert_eq!(enc.flops_per_sample(), f.flops_per_sample());
    }
}

/// Every kernel this CPU runs gives the portable loops' bits (the sums are exact and the float
/// steps around them the same), so an int8 model assigns alike on every CPU.
#[test]
fn int8_kernels_agree_bit_for_bit() {
    let here: Vec<Int8Kernel> = Int8Kernel::ALL
        .iter()
        .copied()
        .filter(|k| k.runs_here())
        .collect();
    for k in Int8Kernel::ALL.iter().filter(|k| !k.runs_here()) {
        std::eprintln!(
            "SKIPPED the {} int8 kernel: this CPU cannot run it",
            k.name()
        );
    }
    assert_eq!(here.last().copied(), Some(Int8Kernel::detect()));
    for spec in specs() {
        let (enc, _) = int8_encoder(&spec);
        assert_eq!(enc.int8_kernel(), Some(Int8Kernel::detect()));
        let portable = enc.clone().with_int8_kernel(Int8Kernel::Portable).unwrap();
        let mut wp = portable.workspace();
        let mut want = vec![0f32; enc.latent_dim()];
        for &k in &here {
            let other = enc.clone().with_int8_kernel(k).unwrap();
            assert_eq!(other.int8_kernel(), Some(k));
            let mut ws = other.workspace();
            let mut got = vec![0f32; enc.latent_dim()];
            for x in samples(enc.input_len()) {
                other.encode(&x, &mut ws, &mut got).unwrap();
                portable.encode(&x, &mut wp, &mut want).unwrap();
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} on {spec:?}",
                    k.name()
                );
            }
        }
    }
    // A kernel this CPU lacks, and an f32 encoder, are refused by name.
    for k in Int8Kernel::ALL.iter().filter(|k| !k.runs_here()) {
        let (enc, _) = int8_encoder(&specs()[0]);
        let err = enc.with_int8_kernel(*k).unwrap_err();
        assert!(err.to_string().contains(k.name()), "{err}");
    }
    let spec = EncoderSpec::paper_dense(6, 2);
    let w = weights(&spec);
    let f32_encoder = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
    assert!(matches!(
        f32_encoder.with_int8_kernel(Int8Kernel::Portable),
        Err(EncoderError::Kernel(_))
    ));
    assert!(
        Int8Kernel::ALL
            .iter()
            .all(|&k| Int8Kernel::from_id(k.id()) == Some(k))
    );
}

#[test]
fn missing_or_mis_sized_int8_weights_are_named() {
    let spec = EncoderSpec::paper_dense(6, 2);
    let w = weights(&spec);
    let q = |n: &str| {
        let v = &w[n];
        Int8Tensor::quantize(n, &[v.len() / 6, 6], v)
    };
    let dense0 = q("encoder.dense0.weight");
    let build = |t: &Int8Tensor| {
        Encoder::quantized(
            &spec,
            |n| w.get(n).map(Vec::as_slice),
            |n| (n == "encoder.dense0.weight").then_some(t),
        )
        .unwrap_err()
    };
    // Only dense0 is given: the next layer is named.
    assert_eq!(
        build(&dense0),
        EncoderError::Missing("encoder.dense1.weight".into())
    );
    let mut short = dense0.clone();
    short.scales.pop();
    assert!(
        matches!(build(&short), EncoderError::Length { ref what, .. } if what == "encoder.dense0.weight scales")
    );
    let mut nan = dense0.clone();
    nan.scales[2] = f32::NAN;
    assert!(matches!(
        build(&nan),
        EncoderError::NotFinite { index: 2, .. }
    ));
    let mut cut = dense0;
    cut.values.pop();
    assert!(
        matches!(build(&cut), EncoderError::Length { ref what, .. } if what == "encoder.dense0.weight")
    );
}
