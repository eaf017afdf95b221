//! The two graph nodes: convolution and transposed convolution as candle custom ops, each
//! with its fused bias and ReLU and its own backward pass.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::columns::*;
/// `[relu](conv2d(x, w) + bias)` on channels-last tensors, as one graph node.
pub(super) struct Conv2dOp {
    pub(super) g: Geometry,
    pub(super) o: usize,
    pub(super) relu: bool,
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "dekm-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, o, p, l) = (self.g, self.o, self.g.patch(), self.g.positions());
        let x = contiguous(xs, xl, g.b * g.image(), "conv2d input")?;
        let w = contiguous(ws, wl, o * p, "conv2d weight")?;
        let bias = contiguous(bs, bl, o, "conv2d bias")?;
        let w = swap_inner(w, (o, g.c, g.taps_per_patch()));
        let (taps, tasks) = (g.taps(), g.tasks());
        let mut y = vec![0f32; g.b * l * o];
        let parts = split_tasks(&mut y, &tasks, l * o);
        run_tasks(&tasks, parts, |task, part, buf| {
            for sub in g.sub_chunks(task) {
                let n = sub.len * l;
                let cols = grow(&mut buf.cols, n * p);
                g.im2col(x, &taps, sub, cols);
                let y = &mut part[(sub.first - task.first) * l * o..][..n * o];
                gemm(
                    (n, o, p),
                    op(cols, p, false),
                    op(&w, p, true),
                    (y, o),
                    false,
                )?;
                bias_relu(y, bias, self.relu);
            }
            Ok(())
        })?;
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.oh, g.ow, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (g, o, p, l, kk) = (
            self.g,
            self.o,
            self.g.patch(),
            self.g.positions(),
            self.g.taps_per_patch(),
        );
        let (taps, tasks) = (g.taps(), g.tasks());
        let mut dx = x.track_op().then(|| vec![0f32; g.b * g.image()]);
        let parts = gradient_parts(dx.as_mut(), &tasks, g.image());
        let partials = with_tensors([grad, res, x, w], "conv2d backward", |[grad, res, x, w]| {
            let w = swap_inner(w, (o, g.c, kk));
            run_tasks(&tasks, parts, |task, mut part, buf| {
                let mut acc = Partial::new(o * p, o);
                for sub in g.sub_chunks(task) {
                    let n = sub.len * l;
                    let range = sub.first * l * o..(sub.first * l + n) * o;
                    let gy = pre_activation(self.relu, (grad, res), range, &mut buf.grad);
                    acc.add_bias_grad(gy);
                    let cols = grow(&mut buf.cols, n * p);
                    g.im2col(x, &taps, sub, cols);
                    gemm(
                        (o, p, n),
                        op(gy, o, true),
                        op(cols, p, false),
                        (&mut acc.dw, p),
                        true,
                    )?;
                    if let Some(part) = &mut part {
                        gemm(
                            (n, p, o),
                            op(gy, o, false),
                            op(&w, p, false),
                            (cols, p),
                            false,
                        )?;
                        g.col2im_add(cols, &taps, (task, sub), part);
                    }
                }
                Ok(acc)
            })
        })?;
        let (dw, db) = sum_partials(partials);
        let dw = swap_inner(&dw, (o, kk, g.c));
        Ok((
            dx.map(|dx| tensor(dx, x.shape())).transpose()?,
            Some(tensor(dw, w.shape())?),
            Some(tensor(db, o)?),
        ))
    }
}

/// `[relu](conv_transpose2d(x, w) + bias)` on channels-last tensors, as one graph node: the
/// adjoint of the convolution described by `g`, whose `o` output channels are this op's input.
pub(super) struct ConvTranspose2dOp {
    pub(super) g: Geometry,
    pub(super) ci: usize,
    pub(super) relu: bool,
}

impl CustomOp3 for ConvTranspose2dOp {
    fn name(&self) -> &'static str {
        "dekm-conv-transpose2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, ci, p, l) = (self.g, self.ci, self.g.patch(), self.g.positions());
        let x = contiguous(xs, xl, g.b * l * ci, "conv_transpose2d input")?;
        let w = contiguous(ws, wl, ci * p, "conv_transpose2d weight")?;
        let bias = contiguous(bs, bl, g.c, "conv_transpose2d bias")?;
        let w = swap_inner(w, (ci, g.c, g.taps_per_patch()));
        let (taps, tasks) = (g.taps(), g.tasks());
        let mut y = vec![0f32; g.b * g.image()];
        let parts = split_tasks(&mut y, &tasks, g.image());
        run_tasks(&tasks, parts, |task, part, buf| {
            for sub in g.sub_chunks(task) {
                let n = sub.len * l;
                let cols = grow(&mut buf.cols, n * p);
                let x = &x[sub.first * l * ci..][..n * ci];
                gemm(
                    (n, p, ci),
                    op(x, ci, false),
                    op(&w, p, false),
                    (cols, p),
                    false,
                )?;
                g.col2im_add(cols, &taps, (task, sub), part);
            }
            bias_relu(part, bias, self.relu);
            Ok(())
        })?;
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.h, g.w, g.c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (g, ci, p, l, kk) = (
            self.g,
            self.ci,
            self.g.patch(),
            self.g.positions(),
            self.g.taps_per_patch(),
        );
        let (taps, tasks) = (g.taps(), g.tasks());
        let mut dx = x.track_op().then(|| vec![0f32; g.b * l * ci]);
        let parts = gradient_parts(dx.as_mut(), &tasks, l * ci);
        let what = "conv_transpose2d backward";
        let partials = with_tensors([grad, res, x, w], what, |[grad, res, x, w]| {
            let w = swap_inner(w, (ci, g.c, kk));
            run_tasks(&tasks, parts, |task, mut part, buf| {
                let mut acc = Partial::new(ci * p, g.c);
                for sub in g.sub_chunks(task) {
                    let n = sub.len * l;
                    // The sub-chunk's images of the gradient, as a batch of their own.
                    let range = sub.first * g.image()..(sub.first + sub.len) * g.image();
                    let gy = pre_activation(self.relu, (grad, res), range, &mut buf.grad);
                    acc.add_bias_grad(gy);
                    let cols = grow(&mut buf.cols, n * p);
                    let own = Images {
                        first: 0,
                        len: sub.len,
                    };
                    g.im2col(gy, &taps, own, cols);
                    let x = &x[sub.first * l * ci..][..n * ci];
                    gemm(
                        (ci, p, n),
                        op(x, ci, true),
                        op(cols, p, false),
                        (&mut acc.dw, p),
                        true,
                    )?;
                    if let Some(part) = &mut part {
                        let dx = &mut part[(sub.first - task.first) * l * ci..];
                        gemm(
                            (n, ci, p),
                            op(cols, p, false),
                            op(&w, p, true),
                            (&mut dx[..n * ci], ci),
                            false,
                        )?;
                    }
                }
                Ok(acc)
            })
        })?;
        let (dw, db) = sum_partials(partials);
        let dw = swap_inner(&dw, (ci, kk, g.c));
        Ok((
            dx.map(|dx| tensor(dx, x.shape())).transpose()?,
            Some(tensor(dw, w.shape())?),
            Some(tensor(db, g.c)?),
        ))
    }
}
