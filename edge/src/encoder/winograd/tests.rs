//! Winograd's layers against the convolutions' sums.

use super::kernels::{at, bt};
use super::*;
use alloc::vec;
use dekm_shared::{Extent, ImageShape};

/// `y[o] = Σ_a d[o + a] g[a]` through each axis's `G` and the written-out `Bᵀ` and `Aᵀ`
/// (on one lane), against the sums themselves.
#[test]
fn every_axis_algorithm_is_its_correlation() {
    let simd = pulp::Scalar::new();
    for (m, r) in [(1, 1), (2, 1), (2, 2), (2, 3)] {
        let axis = Axis::new(m, r).unwrap();
        let alpha = axis.alpha();
        let mut d = [0.0f32; MAX_ALPHA];
        for (i, v) in d.iter_mut().enumerate().take(alpha) {
            *v = 0.25 + i as f32 * 1.75;
        }
        let g: Vec<f64> = (0..r).map(|a| -0.375 + a as f64 * 0.875).collect();
        let bd = bt(simd, alpha, d);
        let mut products = [0.0f32; MAX_ALPHA];
        for (i, p) in products.iter_mut().enumerate().take(alpha) {
            let gw: f64 = (0..r).map(|a| axis.g[i][a] * g[a]).sum();
            *p = (gw * f64::from(bd[i])) as f32;
        }
        let y = at(simd, alpha, products);
        for (o, &y) in y.iter().enumerate().take(m) {
            let want: f64 = (0..r).map(|a| f64::from(d[o + a]) * g[a]).sum();
            assert!(
                (f64::from(y) - want).abs() < 1e-5,
                "F({m}, {r}) output {o}: {y} vs {want}"
            );
        }
    }
    assert!(Axis::new(2, 4).is_none() && Axis::new(3, 2).is_none());
    assert!(Axis::new(1, 2).is_none());
}

#[test]
fn strides_split_kernels_into_phases() {
    let taps = |k, s, out| -> Vec<(usize, usize, usize)> {
        phases(k, s, out)
            .unwrap()
            .into_iter()
            .map(|(p, a)| (p, a.m, a.r))
            .collect()
    };
    assert_eq!(taps(5, 2, 7), [(0, 2, 3), (1, 2, 2)]);
    assert_eq!(taps(4, 2, 7), [(0, 2, 2), (1, 2, 2)]);
    assert_eq!(taps(3, 1, 5), [(0, 2, 3)]);
    // A 1-D layer's single row: one tap, no tiles of two.
    assert_eq!(taps(1, 2, 1), [(0, 1, 1)]);
    assert!(phases(7, 2, 5).is_none());
    // One output from three taps: no products to save.
    assert!(phases(3, 2, 1).is_none());
}

/// Values in [-1, 1) from a counter.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// The layer against the convolution's sums in f64, on geometries with odd outputs (tiles
/// past the edge), padding, strides 1 and 2, channels that are not whole vectors and a
/// leaky activation.
#[test]
fn winograd_layers_compute_their_convolution() {
    let geometry = |cin, cout, side: (usize, usize), k: (usize, usize), s, pad: (usize, usize)| {
        let (kh, kw) = k;
        let out = |n: usize, k: usize, p: usize| (n + 2 * p - k) / s + 1;
        ConvGeometry {
            input: ImageShape {
                channels: cin,
                height: side.0,
                width: side.1,
            },
            output: ImageShape {
                channels: cout,
                height: out(side.0, kh, pad.0),
                width: out(side.1, kw, pad.1),
            },
            kernel: Extent {
                height: kh,
                width: kw,
            },
            stride: s,
            pad: Extent {
                height: pad.0,
                width: pad.1,
            },
        }
    };
    let cases = [
        (
            geometry(32, 64, (14, 14), (5, 5), 2, (2, 2)),
            Activation::Relu,
        ),
        (
            geometry(17, 20, (9, 7), (3, 3), 1, (1, 1)),
            Activation::Relu,
        ),
        (
            geometry(16, 33, (14, 14), (4, 4), 2, (1, 1)),
            Activation::LeakyRelu,
        ),
        (
            geometry(24, 16, (1, 50), (1, 5), 2, (0, 2)),
            Activation::Relu,
        ),
        (
            geometry(16, 16, (6, 6), (3, 3), 2, (0, 0)),
            Activation::Relu,
        ),
    ];
    for (g, activation) in cases {
        let (cin, cout) = (g.input.channels, g.output.channels);
        let in_stride = cin.next_multiple_of(PAD_C);
        let pixels_in = g.input.height * g.input.width;
        let zero = pixels_in * in_stride;
        let mut x = vec![0.0f32; zero + in_stride];
        for (p, px) in x.chunks_exact_mut(in_stride).take(pixels_in).enumerate() {
            px[..cin].copy_from_slice(&values(cin, p as u32 + 7));
        }
        let w = values(cout * cin * g.kernel.area(), 1);
        let b = values(cout, 2);
        let split = Split::new(&g).unwrap();
        let layer = Winograd::new(g, split, (&w, &b), activation, (in_stride, zero as u32));
        let mut scratch = vec![f32::NAN; layer.scratch_len()];
        let mut out = vec![f32::NAN; layer.pixels() * layer.out_stride];
        layer.forward(&x, &mut scratch, &mut out);
        let (k, s, pad) = (g.kernel, g.stride, g.pad);
        for oy in 0..g.output.height {
            for ox in 0..g.output.width {
                let px = oy * g.output.width + ox;
                for o in 0..layer.out_stride {
                    let got = out[px * layer.out_stride + o];
                    if o >= cout {
                        assert_eq!(got, 0.0, "padded channel {o}");
                        continue;
                    }
                    let mut sum = f64::from(b[o]);
                    let mut size = 1.0f64;
                    for ky in 0..k.height {
                        for kx in 0..k.width {
                            let (Some(y), Some(xx)) = (
                                (oy * s + ky).checked_sub(pad.height),
                                (ox * s + kx).checked_sub(pad.width),
                            ) else {
                                continue;
                            };
                            if y >= g.input.height || xx >= g.input.width {
                                continue;
                            }
                            for c in 0..cin {
                                let v = f64::from(x[(y * g.input.width + xx) * in_stride + c]);
                                let wv =
                                    f64::from(w[((o * cin + c) * k.height + ky) * k.width + kx]);
                                sum += v * wv;
                                size += (v * wv).abs();
                            }
                        }
                    }
                    let want = match activation {
                        _ if sum > 0.0 => sum,
                        Activation::Relu => 0.0,
                        Activation::LeakyRelu => sum * f64::from(activation.slope()),
                    };
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-5 * size,
                        "{g:?} pixel {px} channel {o}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// MNIST's second layer takes Winograd's algorithm with AVX2 or AVX-512, and
/// a layer with too few channels or too small an output keeps the direct one.
#[test]
fn the_plan_takes_winograd_only_where_it_pays() {
    let g = |cin, side| ConvGeometry {
        input: ImageShape {
            channels: cin,
            height: side,
            width: side,
        },
        output: ImageShape {
            channels: 16,
            height: side / 2,
            width: side / 2,
        },
        kernel: Extent {
            height: 5,
            width: 5,
        },
        stride: 2,
        pad: Extent {
            height: 2,
            width: 2,
        },
    };
    let plan = |g: ConvGeometry| {
        let cin = g.input.channels;
        let w = vec![0.5; 16 * cin * g.kernel.area()];
        Winograd::plan(
            g,
            (&w, &[0.0; 16]),
            Activation::Relu,
            (cin.next_multiple_of(16), 0),
        )
    };
    let wide = simd_shape().0 >= MIN_LANES;
    assert_eq!(plan(g(32, 14)).is_some(), wide);
    assert!(plan(g(8, 14)).is_none());
    // 3x3 outputs: 4 tiles × 49 products against 9 × 25 taps.
    assert!(plan(g(32, 6)).is_none());
    // A 1-D layer (the sensor encoder's second): 0.73x the multiply-adds, measured no faster.
    let series = ConvGeometry {
        input: ImageShape {
            channels: 32,
            height: 1,
            width: 50,
        },
        output: ImageShape {
            channels: 16,
            height: 1,
            width: 25,
        },
        kernel: Extent {
            height: 1,
            width: 5,
        },
        pad: Extent {
            height: 0,
            width: 2,
        },
        ..g(32, 14)
    };
    assert!(Split::new(&series).is_some());
    assert!(plan(series).is_none());
}
