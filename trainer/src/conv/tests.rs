//! The fused convolutions against candle's own and against direct loops: forward, the three
//! gradients, with and without the fused ReLU, and the layers built on them.

use super::columns::{SUB_FLOATS, TASKS_PER_THREAD};
use super::*;
use crate::rng;
use candle_core::{DType, Device, Var};
use rand::Rng;

fn random(shape: &[usize], seed: u64) -> Var {
    let mut r = rng(seed, 0);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

fn close(a: &Tensor, b: &Tensor, what: &str) {
    let (a, b) = (
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err / scale < 1e-4, "{what}: relative error {}", err / scale);
}

/// Forward output and gradients for input, weight and bias against candle's reference ops,
/// with a random upstream gradient (loss = Σ y·r), without and with the fused ReLU.
fn check(x: &[usize], w: &[usize], stride: usize, pad: usize, out_pad: Option<usize>, seed: u64) {
    let (xv, wv, bv) = (
        random(x, seed),
        random(w, seed + 1),
        random(&[if out_pad.is_some() { w[1] } else { w[0] }], seed + 2),
    );
    for relu in [false, true] {
        let xc = to_channels_last(&xv).unwrap();
        let ours = match out_pad {
            None => conv2d(&xc, &wv, &bv, stride, (pad, pad), relu).unwrap(),
            Some(op) => {
                conv_transpose2d(&xc, &wv, &bv, (stride, (pad, pad), (op, op)), relu).unwrap()
            }
        };
        let ours = to_channels_first(&ours).unwrap();
        let reference = match out_pad {
            None => xv.conv2d(&wv, pad, stride, 1, 1).unwrap(),
            Some(op) => xv.conv_transpose2d(&wv, pad, op, stride, 1).unwrap(),
        };
        let o = reference.dim(1).unwrap();
        let mut reference = reference
            .broadcast_add(&bv.reshape((1, o, 1, 1)).unwrap())
            .unwrap();
        if relu {
            reference = reference.relu().unwrap();
        }
        let what = format!("x {x:?} w {w:?} s {stride} p {pad} op {out_pad:?} relu {relu}");
        close(&ours, &reference, &format!("{what} forward"));
        let up = random(reference.dims(), seed + 3);
        let g1 = (ours * up.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (reference * up.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (v, name) in [(&xv, "input"), (&wv, "weight"), (&bv, "bias")] {
            close(
                g1.get(v).unwrap(),
                g2.get(v).unwrap(),
                &format!("{what} grad {name}"),
            );
        }
    }
}

#[test]
fn conv2d_matches_candle_on_the_paper_layers_and_odd_shapes() {
    check(&[2, 1, 28, 28], &[32, 1, 5, 5], 2, 2, None, 1);
    check(&[2, 32, 14, 14], &[64, 32, 5, 5], 2, 2, None, 2);
    check(&[2, 64, 7, 7], &[128, 64, 3, 3], 2, 0, None, 3);
    check(&[1, 3, 9, 9], &[4, 3, 3, 3], 1, 1, None, 4);
}

#[test]
fn batches_split_into_tasks_and_cache_sized_chunks_give_the_same_result() {
    let g = |b| Geometry {
        b,
        c: 32,
        h: 14,
        w: 14,
        kh: 5,
        kw: 5,
        stride: 2,
        ph: 2,
        pw: 2,
        oh: 7,
        ow: 7,
    };
    // The paper's second layer: 800 x 49 columns per image. A batch whose tasks hold one
    // image more than a sub-chunk, plus a remainder, gives tasks of unequal length, each
    // cut into a full sub-chunk and a short one.
    let per_sub = SUB_FLOATS / (800 * 49);
    let n_tasks = TASKS_PER_THREAD * rayon::current_num_threads();
    let b = n_tasks * (per_sub + 1) + 1;
    let tasks = g(b).tasks();
    assert_eq!(tasks.len(), n_tasks);
    assert_eq!(tasks[0].len, per_sub + 2);
    assert_eq!(tasks[1].len, per_sub + 1);
    let mut next = 0;
    for t in &tasks {
        assert_eq!(t.first, next);
        let subs: Vec<(usize, usize)> = g(b).sub_chunks(*t).map(|s| (s.first, s.len)).collect();
        let short = t.len - per_sub;
        assert_eq!(subs, [(t.first, per_sub), (t.first + per_sub, short)]);
        next += t.len;
    }
    assert_eq!(next, b);
    // Fewer images than tasks: one task per image.
    assert_eq!(g(3).tasks().len(), 3.min(n_tasks));
    check(&[b, 32, 14, 14], &[64, 32, 5, 5], 2, 2, None, 11);
    check(&[b, 64, 7, 7], &[64, 32, 5, 5], 2, 2, Some(1), 12);
}

/// Direct-loop convolution and its gradients in f64, for shapes where candle's own backward
/// pass is wrong (it mis-sizes the input gradient when `(side + 2·pad − k) % stride != 0`).
fn naive(x: &Tensor, w: &Tensor, r: &Tensor, stride: usize, pad: (usize, usize)) -> [Vec<f64>; 4] {
    let v = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&x| f64::from(x))
            .collect::<Vec<_>>()
    };
    let ((b, c, h, wd), (o, _, kh, kw), (_, _, oh, ow)) =
        (x.dims4().unwrap(), w.dims4().unwrap(), r.dims4().unwrap());
    let (xs, ws, rs) = (v(x), v(w), v(r));
    let (mut y, mut gx, mut gw, mut gb) = (
        vec![0.0; b * o * oh * ow],
        vec![0.0; xs.len()],
        vec![0.0; ws.len()],
        vec![0.0; o],
    );
    for (bi, oi, oy, ox) in (0..b).flat_map(|bi| {
        (0..o)
            .flat_map(move |oi| (0..oh).flat_map(move |oy| (0..ow).map(move |ox| (bi, oi, oy, ox))))
    }) {
        let yi = ((bi * o + oi) * oh + oy) * ow + ox;
        gb[oi] += rs[yi];
        for (ci, ki, kj) in
            (0..c).flat_map(|ci| (0..kh).flat_map(move |ki| (0..kw).map(move |kj| (ci, ki, kj))))
        {
            let (iy, ix) = (
                (oy * stride + ki) as isize - pad.0 as isize,
                (ox * stride + kj) as isize - pad.1 as isize,
            );
            if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                continue;
            }
            let xi = ((bi * c + ci) * h + iy as usize) * wd + ix as usize;
            let wi = ((oi * c + ci) * kh + ki) * kw + kj;
            y[yi] += ws[wi] * xs[xi];
            gx[xi] += ws[wi] * rs[yi];
            gw[wi] += xs[xi] * rs[yi];
        }
    }
    [y, gx, gw, gb]
}

#[test]
fn conv2d_matches_direct_loops_on_uneven_strides() {
    for (x, w, stride, pad) in [
        ([3, 2, 11, 13], [5, 2, 5, 5], 3, (2, 2)),
        ([1, 1, 8, 7], [2, 1, 3, 3], 2, (1, 1)),
        // Kernels wider than the image: whole rows and columns of taps fall in the padding
        // (candle's own backward pass fails on these shapes, so no candle reference).
        ([2, 2, 2, 3], [3, 2, 5, 5], 2, (2, 2)),
        ([1, 1, 1, 1], [2, 1, 3, 3], 3, (1, 1)),
        // Convolutions over time: one row, `1 x k` kernels, padding along time only.
        ([3, 6, 1, 100], [32, 6, 1, 7], 2, (0, 3)),
        ([2, 4, 1, 9], [5, 4, 1, 3], 2, (0, 0)),
        ([2, 3, 1, 2], [2, 3, 1, 5], 3, (0, 2)),
        // Rectangles in general.
        ([2, 2, 6, 9], [3, 2, 3, 5], 2, (1, 2)),
    ] {
        let (xv, wv, bv) = (random(&x, 20), random(&w, 21), random(&[w[0]], 22));
        let zero = Tensor::zeros(w[0], candle_core::DType::F32, &Device::Cpu).unwrap();
        let xc = to_channels_last(&xv).unwrap();
        let y = to_channels_first(&conv2d(&xc, &wv, &zero, stride, pad, false).unwrap()).unwrap();
        let up = random(y.dims(), 23);
        let want = naive(&xv, &wv, &up, stride, pad);
        let yb = to_channels_first(&conv2d(&xc, &wv, &bv, stride, pad, false).unwrap()).unwrap();
        let g = (yb * up.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let got = [
            &y,
            g.get(&xv).unwrap(),
            g.get(&wv).unwrap(),
            g.get(&bv).unwrap(),
        ];
        for ((got, want), what) in
            got.iter()
                .zip(&want)
                .zip(["forward", "grad input", "grad weight", "grad bias"])
        {
            let want = Tensor::from_vec(
                want.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                want.len(),
                &Device::Cpu,
            )
            .unwrap();
            close(
                got,
                &want,
                &format!("{x:?} {w:?} s{stride} p{pad:?} {what}"),
            );
        }
    }
}

#[test]
fn conv_transpose2d_matches_candle_with_output_padding() {
    check(&[2, 128, 3, 3], &[128, 64, 3, 3], 2, 0, Some(0), 6);
    check(&[2, 64, 7, 7], &[64, 32, 5, 5], 2, 2, Some(1), 7);
    check(&[2, 32, 14, 14], &[32, 1, 5, 5], 2, 2, Some(1), 8);
    check(&[1, 3, 5, 5], &[3, 2, 3, 3], 1, 1, Some(0), 9);
    check(&[2, 2, 4, 6], &[2, 3, 5, 5], 3, 1, Some(2), 10);
}

#[test]
fn mismatched_shapes_are_errors() {
    let x = random(&[2, 8, 8, 1], 1);
    let b = random(&[4], 3);
    // Channel count, kernel larger than the padded image, bias length.
    assert!(conv2d(&x, &random(&[4, 3, 3, 3], 2), &b, 1, (0, 0), false).is_err());
    assert!(conv2d(&x, &random(&[4, 1, 9, 9], 2), &b, 1, (0, 0), false).is_err());
    assert!(conv2d(&x, &random(&[5, 1, 3, 3], 2), &b, 1, (0, 0), false).is_err());
    assert!(conv2d(&x, &random(&[4, 1, 3, 3], 2), &b, 1, (0, 0), false).is_ok());
}

/// The 1-D layers (one row, `1 x k` kernels) against candle's own `conv1d` and
/// `conv_transpose1d` (forward), and the gradients against candle's `conv2d` on the explicitly
/// padded row (candle's 1-D backward passes are missing or wrong, see `candle1d`), on the shapes
/// of the temporal encoder, odd lengths included.
#[test]
fn one_row_layers_match_candles_conv1d() {
    for (b, c, len, o, k, stride, pad, seed) in [
        (3, 6, 100, 32, 7, 2, 3, 30),
        (2, 32, 50, 64, 5, 2, 2, 31),
        (2, 64, 25, 128, 3, 2, 0, 32),
        (2, 3, 29, 4, 4, 3, 2, 33),
    ] {
        let (xv, wv, bv) = (
            random(&[b, c, len], seed),
            random(&[o, c, k], seed + 1),
            random(&[o], seed + 2),
        );
        let x4 = xv.unsqueeze(2).unwrap();
        let w4 = wv.unsqueeze(2).unwrap();
        let xc = to_channels_last(&x4).unwrap();
        let ours = conv2d(&xc, &w4, &bv, stride, (0, pad), true).unwrap();
        let ours = to_channels_first(&ours).unwrap().squeeze(2).unwrap();
        let reference = xv
            .conv1d(&wv, pad, stride, 1, 1)
            .unwrap()
            .broadcast_add(&bv.reshape((1, o, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        let what = format!("conv1d x [{b}, {c}, {len}] w [{o}, {c}, {k}] s {stride} p {pad}");
        close(&ours, &reference, &format!("{what} forward"));
        let up = random(reference.dims(), seed + 3);
        let grads = |y: Tensor| {
            (y * up.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let reached = (reference.dim(2).unwrap() - 1) * stride + k;
        let by_rows = x4
            .pad_with_zeros(3, pad, pad)
            .unwrap()
            .narrow(3, 0, reached)
            .unwrap()
            .conv2d(&w4, 0, stride, 1, 1)
            .unwrap()
            .broadcast_add(&bv.reshape((1, o, 1, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap()
            .squeeze(2)
            .unwrap();
        close(&by_rows, &reference, &format!("{what} by rows"));
        let (g1, g2) = (grads(ours), grads(by_rows));
        for (v, name) in [(&xv, "input"), (&wv, "weight"), (&bv, "bias")] {
            close(
                g1.get(v).unwrap(),
                g2.get(v).unwrap(),
                &format!("{what} grad {name}"),
            );
        }

        // The transposed layer maps the output length back onto `len` exactly.
        let out = (len + 2 * pad - k) / stride + 1;
        let op = len - ((out - 1) * stride + k - 2 * pad);
        let (yv, tb) = (random(&[b, o, out], seed + 4), random(&[c], seed + 5));
        let wt = random(&[o, c, k], seed + 6);
        let yc = to_channels_last(&yv.unsqueeze(2).unwrap()).unwrap();
        let wt4 = wt.unsqueeze(2).unwrap();
        let ours = conv_transpose2d(&yc, &wt4, &tb, (stride, (0, pad), (0, op)), false).unwrap();
        let ours = to_channels_first(&ours).unwrap().squeeze(2).unwrap();
        let reference = yv
            .conv_transpose1d(&wt, pad, op, stride, 1, 1)
            .unwrap()
            .broadcast_add(&tb.reshape((1, c, 1)).unwrap())
            .unwrap();
        let by_rows = yv
            .unsqueeze(2)
            .unwrap()
            .conv_transpose2d(&wt4, 0, 0, stride, 1)
            .unwrap()
            .pad_with_zeros(3, 0, op)
            .unwrap()
            .narrow(3, pad, len)
            .unwrap()
            .broadcast_add(&tb.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .squeeze(2)
            .unwrap();
        close(
            &ours,
            &by_rows,
            &format!("{what} transposed forward by rows"),
        );
        // Unpadded, candle 0.11 takes its col2im path for `conv_transpose1d`, which disagrees
        // with both its direct 1-D loop and its `conv_transpose2d` on such shapes: only the
        // direct loop is a reference.
        if pad > 0 {
            close(&ours, &reference, &format!("{what} transposed forward"));
        }
    }
}

/// The GPU's layers (`gemm`) against candle's `conv2d` / `conv_transpose2d`: forward, and the
/// input and weight gradients under a random upstream gradient.
fn check_gemm(x: &[usize], w: &[usize], stride: usize, pad: usize, out_pad: Option<usize>) {
    let seed = (x.iter().chain(w).sum::<usize>() + stride * 7 + pad) as u64;
    let (xv, wv) = (random(x, seed), random(w, seed + 1));
    let (ours, reference) = match out_pad {
        None => (
            gemm::conv2d(&xv, &wv, stride, (pad, pad)).unwrap(),
            xv.conv2d(&wv, pad, stride, 1, 1).unwrap(),
        ),
        Some(op) => {
            let reference = xv.conv_transpose2d(&wv, pad, op, stride, 1).unwrap();
            let (_, _, h, wd) = reference.dims4().unwrap();
            let ours = gemm::conv_transpose2d(&xv, &wv, stride, (pad, pad), (h, wd)).unwrap();
            (ours, reference)
        }
    };
    let what = format!("gemm x {x:?} w {w:?} s {stride} p {pad} op {out_pad:?}");
    close(&ours, &reference, &format!("{what} forward"));
    let up = random(reference.dims(), seed + 2);
    let grads = |y: &Tensor| (y * up.as_tensor()).unwrap().sum_all().unwrap().backward();
    let (got, want) = (grads(&ours).unwrap(), grads(&reference).unwrap());
    for (v, name) in [(&xv, "input"), (&wv, "weight")] {
        let (got, want) = (got.get(v).unwrap(), want.get(v).unwrap());
        close(got, want, &format!("{what} grad {name}"));
    }
}

#[test]
fn gemm_convolutions_match_candle() {
    // The paper's layers, ClusterGAN's 4x4 ones, stride 1, and a kernel smaller than the stride.
    check_gemm(&[2, 1, 28, 28], &[32, 1, 5, 5], 2, 2, None);
    check_gemm(&[2, 32, 14, 14], &[64, 32, 5, 5], 2, 2, None);
    check_gemm(&[2, 64, 7, 7], &[128, 64, 3, 3], 2, 0, None);
    check_gemm(&[2, 1, 28, 28], &[64, 1, 4, 4], 2, 1, None);
    check_gemm(&[1, 3, 9, 9], &[4, 3, 3, 3], 1, 1, None);
    check_gemm(&[2, 2, 11, 11], &[3, 2, 2, 2], 3, 0, None);
    // Their transposes, output padding included.
    check_gemm(&[2, 128, 3, 3], &[128, 64, 3, 3], 2, 0, Some(0));
    check_gemm(&[2, 64, 7, 7], &[64, 32, 5, 5], 2, 2, Some(1));
    check_gemm(&[2, 32, 14, 14], &[32, 1, 5, 5], 2, 2, Some(1));
    check_gemm(&[2, 128, 7, 7], &[128, 64, 4, 4], 2, 1, Some(0));
    check_gemm(&[1, 3, 5, 5], &[3, 2, 3, 3], 1, 1, Some(0));
    check_gemm(&[2, 2, 4, 6], &[2, 3, 5, 5], 3, 1, Some(2));
    check_gemm(&[2, 2, 4, 4], &[2, 3, 2, 2], 3, 0, Some(1));
}

/// One-row layers with padding along the row only (the temporal encoder's) against the fused
/// kernels, which take padding per axis: forward and gradients, both directions.
#[test]
fn gemm_one_row_layers_match_the_fused_ones() {
    for (b, c, len, o, k, stride, pad) in [(3, 6, 100, 32, 7, 2, 3), (2, 3, 29, 4, 4, 3, 2)] {
        let seed = (len + k) as u64;
        let (x, w) = (
            random(&[b, c, 1, len], seed),
            random(&[o, c, 1, k], seed + 1),
        );
        let lo = out_side(len, k, stride, pad).unwrap();
        let y = random(&[b, o, 1, lo], seed + 2);
        let op = len - ((lo - 1) * stride + k - 2 * pad);
        let (zo, zc) = (
            Tensor::zeros(o, DType::F32, &Device::Cpu).unwrap(),
            Tensor::zeros(c, DType::F32, &Device::Cpu).unwrap(),
        );
        let fused = |t: Tensor| to_channels_first(&t).unwrap();
        let cases = [
            (
                gemm::conv2d(&x, &w, stride, (0, pad)).unwrap(),
                fused(
                    conv2d(
                        &to_channels_last(&x).unwrap(),
                        &w,
                        &zo,
                        stride,
                        (0, pad),
                        false,
                    )
                    .unwrap(),
                ),
                &x,
            ),
            (
                gemm::conv_transpose2d(&y, &w, stride, (0, pad), (1, len)).unwrap(),
                fused(
                    conv_transpose2d(
                        &to_channels_last(&y).unwrap(),
                        &w,
                        &zc,
                        (stride, (0, pad), (0, op)),
                        false,
                    )
                    .unwrap(),
                ),
                &y,
            ),
        ];
        for (i, (ours, reference, input)) in cases.into_iter().enumerate() {
            let what = format!("one row {i}: [{b}, {c}, {len}] k {k} s {stride} p {pad}");
            close(&ours, &reference, &format!("{what} forward"));
            let up = random(reference.dims(), seed + 3);
            let grads = |t: &Tensor| (t * up.as_tensor()).unwrap().sum_all().unwrap().backward();
            let (got, want) = (grads(&ours).unwrap(), grads(&reference).unwrap());
            for (v, name) in [(input, "input"), (&w, "weight")] {
                let (got, want) = (got.get(v).unwrap(), want.get(v).unwrap());
                close(got, want, &format!("{what} grad {name}"));
            }
        }
    }
}

/// The data need no gradient: the backward pass leaves the first layer's input alone.
#[test]
fn gemm_skips_the_gradient_of_data() {
    let x = random(&[2, 1, 12, 12], 50).as_tensor().detach();
    let w = random(&[4, 1, 5, 5], 51);
    let y = gemm::conv2d(&x, &w, 2, (2, 2)).unwrap();
    let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(&w).is_some());
}
