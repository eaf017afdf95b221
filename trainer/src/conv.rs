//! Fast CPU convolutions for training: each convolution and transposed convolution is one
//! candle custom op over `(input, weight, bias)`, with its own backward pass, built on `im2col` /
//! `col2im` and three GEMMs.
//!
//! candle 0.11's CPU `conv_transpose2d` is a direct loop and `conv2d`'s backward pass goes
//! through it, which makes training the paper's autoencoder about ten times slower than PyTorch.
//! Expressing the convolution through candle's own matmul fixes the multiply-adds but not the
//! rest: candle's autograd gives every intermediate tensor a zero-filled gradient buffer plus an
//! addition, so the 40 MB `im2col` matrix of a layer cost more in memory traffic than its GEMM.
//! Here the whole layer is one node of the graph: the column matrix lives in a reused scratch
//! buffer and never becomes a tensor, bias and ReLU are fused into the output pass, and the
//! backward pass computes exactly three things (input, weight and bias gradients), skipping the
//! input gradient when nothing upstream needs it.
//!
//! Activations are channels-last, `[b, h, w, c]`, as in XNNPACK and oneDNN's blocked layouts:
//! - one row of the column matrix is one output pixel's patch, `k·k` runs of `c` contiguous
//!   floats, so `im2col` and `col2im` move whole vectors instead of gathering single floats
//!   through an index map (that gather was a fifth of a training step);
//! - a GEMM's output `[pixels, channels]` is already the next layer's input;
//! - each image is one contiguous block, so the batch splits into tasks that own their part of
//!   every output.
//!
//! Each op cuts the batch into a few tasks per thread; a task runs the gathers, single-threaded
//! GEMMs and scatters of its images in sub-chunks whose column matrix stays in the core's L2
//! cache. A layer is then one parallel region, and weight and bias gradients are summed per task
//! and then in task order, so results do not depend on which thread ran which task.

use std::cell::RefCell;

use candle_core::{
    CpuStorage, CustomOp3, Device, Layout, Module, Result, Shape, Storage, Tensor, bail,
};
use candle_nn::VarBuilder;
use dekm_kernels::Operand;
use rayon::prelude::*;

/// Shape of one convolution: channels-last input `[b, h, w, c]`, square kernel, output
/// spatial size `oh x ow`. For a transposed convolution it describes the forward convolution
/// whose adjoint it is (`c, h, w` are the transposed convolution's output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// Columns of the column matrix, one per `(ki, kj, channel)`: the length of a patch.
    fn patch(&self) -> usize {
        self.k * self.k * self.c
    }

    /// Output positions per image.
    fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Floats of one input image.
    fn image(&self) -> usize {
        self.h * self.w * self.c
    }

    /// Input coordinate read by output `o` at kernel offset `kk`, if inside the image.
    fn src(&self, o: usize, kk: usize, limit: usize) -> Option<usize> {
        (o * self.stride + kk)
            .checked_sub(self.pad)
            .filter(|&i| i < limit)
    }

    /// For every output position (outer) and kernel tap `ki·k + kj` (inner), the input pixel
    /// it reads, `usize::MAX` where it falls in the padding; computed once per call.
    fn taps(&self) -> Vec<usize> {
        let g = *self;
        let kk = g.k * g.k;
        (0..g.positions() * kk)
            .map(|i| {
                let (o, t) = (i / kk, i % kk);
                match (g.src(o / g.ow, t / g.k, g.h), g.src(o % g.ow, t % g.k, g.w)) {
                    (Some(iy), Some(ix)) => iy * g.w + ix,
                    _ => usize::MAX,
                }
            })
            .collect()
    }

    /// The batch cut into consecutive runs of images, [`TASKS_PER_THREAD`] per thread so that a
    /// core slowed by a neighbour does not hold the others up. The split depends only on the
    /// batch size and the thread count, so the order of every floating-point sum does too.
    fn tasks(&self) -> Vec<Images> {
        let n = (TASKS_PER_THREAD * rayon::current_num_threads()).clamp(1, self.b.max(1));
        let (q, rem) = (self.b / n, self.b % n);
        let mut first = 0;
        (0..n)
            .map(|i| {
                let len = q + usize::from(i < rem);
                first += len;
                Images {
                    first: first - len,
                    len,
                }
            })
            .collect()
    }

    /// `task` in runs of images whose column matrix fits in a core's own L2 cache: written by
    /// the gather and read back by the GEMM right away, it then never travels to memory.
    fn sub_chunks(&self, task: Images) -> impl Iterator<Item = Images> + use<> {
        let per_image = (self.patch() * self.positions()).max(1);
        let len = (SUB_FLOATS / per_image).max(1);
        let end = task.first + task.len;
        (task.first..end).step_by(len).map(move |first| Images {
            first,
            len: len.min(end - first),
        })
    }

    /// `x[b, h, w, c]` → `out[images·oh·ow, k·k·c]` for the images of `images`; column
    /// `(ki, kj, ci)` matches a weight permuted to `[O, k, k, C]` (see [`swap_inner`]). Every
    /// element of `out` is written, so it may hold stale scratch data.
    fn im2col(&self, x: &[f32], taps: &[usize], images: Images, out: &mut [f32]) {
        let (l, patch, c, image) = (self.positions(), self.patch(), self.c, self.image());
        let out = &mut out[..images.len * l * patch];
        if out.is_empty() || c == 0 {
            return;
        }
        let x = &x[images.first * image..][..images.len * image];
        for (img, cols) in x.chunks_exact(image).zip(out.chunks_exact_mut(l * patch)) {
            for (row, taps) in cols
                .chunks_exact_mut(patch)
                .zip(taps.chunks_exact(patch / c))
            {
                for (dst, &i) in row.chunks_exact_mut(c).zip(taps) {
                    match img.get(i.saturating_mul(c)..) {
                        Some(src) => copy(dst, src),
                        None => dst.fill(0.0),
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col`]: adds the patches of `cols[images·oh·ow, k·k·c]` into the
    /// images `images` of `out`, which holds the images of `task` (`images` lies inside it) and
    /// the starting values (zeros, or a bias).
    fn col2im_add(
        &self,
        cols: &[f32],
        taps: &[usize],
        (task, images): (Images, Images),
        out: &mut [f32],
    ) {
        let (l, patch, c, image) = (self.positions(), self.patch(), self.c, self.image());
        let cols = &cols[..images.len * l * patch];
        if cols.is_empty() || c == 0 || image == 0 {
            return;
        }
        let out = &mut out[(images.first - task.first) * image..][..images.len * image];
        for (img, cols) in out
            .chunks_exact_mut(image)
            .zip(cols.chunks_exact(l * patch))
        {
            for (row, taps) in cols.chunks_exact(patch).zip(taps.chunks_exact(patch / c)) {
                for (src, &i) in row.chunks_exact(c).zip(taps) {
                    if let Some(dst) = img.get_mut(i.saturating_mul(c)..) {
                        add(dst, src);
                    }
                }
            }
        }
    }
}

/// `dst = src[..dst.len()]`, in whole 16-float blocks the compiler keeps in vector registers (a
/// `copy_from_slice` of a run-time length becomes a `memcpy` call per pixel and tap).
#[inline(always)]
fn copy(dst: &mut [f32], src: &[f32]) {
    let src = &src[..dst.len()];
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(s);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// `dst[..src.len()] += src`, blocked like [`copy`].
#[inline(always)]
fn add(dst: &mut [f32], src: &[f32]) {
    let dst = &mut dst[..src.len()];
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        for (d, s) in d.iter_mut().zip(s) {
            *d += s;
        }
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d += s;
    }
}

/// Tasks per thread a batch is cut into.
const TASKS_PER_THREAD: usize = 4;

/// Floats in the column matrix of one sub-chunk (1 MiB, a Zen 4 core's L2 cache).
const SUB_FLOATS: usize = 1 << 18;

/// A run of consecutive images of a batch, processed together.
#[derive(Debug, Clone, Copy)]
struct Images {
    first: usize,
    len: usize,
}

/// Cuts a batch tensor with `per_image` floats per image into the tasks' parts.
fn split_tasks<'a>(data: &'a mut [f32], tasks: &[Images], per_image: usize) -> Vec<&'a mut [f32]> {
    let mut rest = data;
    tasks
        .iter()
        .map(|t| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(t.len * per_image);
            rest = tail;
            head
        })
        .collect()
}

/// `[a, b, c]` → `[a, c, b]`: a weight `[O, C, k, k]` to the `[O, k, k, C]` order of a
/// channels-last patch, and its gradient back with the sizes swapped.
fn swap_inner(x: &[f32], (a, b, c): (usize, usize, usize)) -> Vec<f32> {
    let mut out = vec![0f32; a * b * c];
    for (src, dst) in x.chunks_exact(b * c).zip(out.chunks_exact_mut(b * c)) {
        for (j, row) in src.chunks_exact(c).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                dst[k * b + j] = v;
            }
        }
    }
    out
}

/// A thread's working buffers for one sub-chunk.
#[derive(Default)]
struct Scratch {
    /// The column matrix.
    cols: Vec<f32>,
    /// The upstream gradient, ReLU undone.
    grad: Vec<f32>,
}

thread_local! {
    /// Each thread's buffers, kept between calls: a fresh allocation would cost page faults
    /// every training step.
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Runs `f` with this thread's buffers (fresh ones if they are already in use).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Runs `f(task, part, scratch)` for every task on rayon's threads, each task with its part of
/// the output and its thread's scratch buffers; the results come back in task order.
fn run_tasks<P: Send, R: Send>(
    tasks: &[Images],
    parts: Vec<P>,
    f: impl Fn(Images, P, &mut Scratch) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    tasks
        .par_iter()
        .zip(parts)
        .map(|(&task, part)| with_scratch(|buf| f(task, part, buf)))
        .collect::<Vec<_>>()
        .into_iter()
        .collect()
}

/// The first `len` floats of `buf`, grown if needed, with unspecified contents.
fn grow(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

fn op(data: &[f32], ld: usize, transposed: bool) -> Operand<'_> {
    Operand {
        data,
        ld,
        transposed,
    }
}

/// `c = a·b`, or `c += a·b` when `accumulate`, on the calling thread (the tasks are the
/// parallelism; see [`dekm_kernels::gemm`]).
fn gemm(
    mnk: (usize, usize, usize),
    a: Operand,
    b: Operand,
    c: (&mut [f32], usize),
    accumulate: bool,
) -> Result<()> {
    dekm_kernels::gemm(mnk, a, b, c, accumulate, 1)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))
}

/// One task's share of the weight and bias gradients.
struct Partial {
    dw: Vec<f32>,
    db: Vec<f64>,
}

impl Partial {
    fn new(w: usize, b: usize) -> Self {
        Self {
            dw: vec![0.0; w],
            db: vec![0.0; b],
        }
    }

    /// Adds the pixels of `gy[pixels, channels]` to the bias gradient.
    fn add_bias_grad(&mut self, gy: &[f32]) {
        let n = self.db.len();
        if n == 0 {
            return;
        }
        for px in gy.chunks_exact(n) {
            for (d, &g) in self.db.iter_mut().zip(px) {
                *d += f64::from(g);
            }
        }
    }
}

/// The sum of the tasks' partial gradients, added in task order whichever thread ran which
/// task, so a run is reproducible at a given thread count.
fn sum_partials(partials: Vec<Partial>) -> (Vec<f32>, Vec<f32>) {
    const BLOCK: usize = 4096;
    let (w, b) = partials
        .first()
        .map_or((0, 0), |p| (p.dw.len(), p.db.len()));
    let mut dw = vec![0f32; w];
    dw.par_chunks_mut(BLOCK).enumerate().for_each(|(i, block)| {
        for p in &partials {
            for (o, v) in block.iter_mut().zip(&p.dw[i * BLOCK..]) {
                *o += v;
            }
        }
    });
    let db = (0..b)
        .map(|j| partials.iter().map(|p| p.db[j]).sum::<f64>() as f32)
        .collect();
    (dw, db)
}

fn contiguous<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    len: usize,
    what: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{what}: only f32 is supported");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) if end - start == len => Ok(&data[start..end]),
        _ => bail!("{what}: tensor must be contiguous with {len} elements"),
    }
}

/// Runs `f` on the contiguous f32 data of CPU tensors (the backward passes receive tensors
/// rather than storages).
fn with_tensors<const N: usize, R>(
    ts: [&Tensor; N],
    what: &str,
    f: impl FnOnce([&[f32]; N]) -> Result<R>,
) -> Result<R> {
    let ts = ts.map(|t| t.contiguous());
    let ts = ts.into_iter().collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let data = guards
        .iter()
        .zip(&ts)
        .map(|((storage, layout), t)| match &**storage {
            Storage::Cpu(cpu) => contiguous(cpu, layout, t.elem_count(), what),
            _ => bail!("{what}: CPU tensors only"),
        })
        .collect::<Result<Vec<_>>>()?;
    let data: [&[f32]; N] = data
        .try_into()
        .map_err(|_| candle_core::Error::Msg(format!("{what}: tensor count")))?;
    f(data)
}

/// `out[p, j] += bias[j]` for every pixel `p`, then ReLU when `relu` (NaN stays NaN, so a
/// diverging run is still caught downstream).
fn bias_relu(out: &mut [f32], bias: &[f32], relu: bool) {
    if bias.is_empty() {
        return;
    }
    for px in out.chunks_exact_mut(bias.len()) {
        for (v, &b) in px.iter_mut().zip(bias) {
            *v += b;
            if relu && *v < 0.0 {
                *v = 0.0;
            }
        }
    }
}

/// `grad[range]`, or with the fused ReLU undone (zero where the op's output `out` is not
/// positive) in `buf`: computed per sub-chunk, so the masked gradient is never a full tensor.
fn pre_activation<'a>(
    relu: bool,
    (grad, out): (&'a [f32], &[f32]),
    range: std::ops::Range<usize>,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    if !relu {
        return &grad[range];
    }
    let masked = grow(buf, range.len());
    for ((m, &g), &y) in masked.iter_mut().zip(&grad[range.clone()]).zip(&out[range]) {
        *m = if y > 0.0 { g } else { 0.0 };
    }
    masked
}

fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// The input gradient split into the tasks' parts (`None` for every task when no input
/// gradient is needed).
fn gradient_parts<'a>(
    dx: Option<&'a mut Vec<f32>>,
    tasks: &[Images],
    per_image: usize,
) -> Vec<Option<&'a mut [f32]>> {
    match dx {
        Some(dx) => split_tasks(dx, tasks, per_image)
            .into_iter()
            .map(Some)
            .collect(),
        None => tasks.iter().map(|_| None).collect(),
    }
}

/// `[relu](conv2d(x, w) + bias)` on channels-last tensors, as one graph node.
struct Conv2dOp {
    g: Geometry,
    o: usize,
    relu: bool,
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
        let w = swap_inner(w, (o, g.c, g.k * g.k));
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
            self.g.k * self.g.k,
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
struct ConvTranspose2dOp {
    g: Geometry,
    ci: usize,
    relu: bool,
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
        let w = swap_inner(w, (ci, g.c, g.k * g.k));
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
            self.g.k * self.g.k,
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

fn out_side(n: usize, k: usize, stride: usize, pad: usize) -> Result<usize> {
    match (n + 2 * pad).checked_sub(k) {
        Some(s) if stride > 0 => Ok(s / stride + 1),
        _ => bail!("convolution: input side {n} too small for kernel {k} with padding {pad}"),
    }
}

fn check_bias(bias: &Tensor, n: usize, what: &str) -> Result<()> {
    if bias.dims() != [n] {
        bail!("{what}: bias has shape {:?}, expected [{n}]", bias.dims());
    }
    Ok(())
}

/// `conv2d(x[b, h, w, c], w[o, c, k, k]) + bias[o]` → `[b, oh, ow, o]` (channels-last in and
/// out; the weight keeps candle's layout), with symmetric `pad` and `stride`, followed by ReLU when `relu`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    pad: usize,
    relu: bool,
) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (o, wc, k, k2) = weight.dims4()?;
    if wc != c || k != k2 {
        bail!("conv2d: input has {c} channels, weight is [{o}, {wc}, {k}, {k2}]");
    }
    check_bias(bias, o, "conv2d")?;
    let (oh, ow) = (out_side(h, k, stride, pad)?, out_side(w, k, stride, pad)?);
    let g = Geometry {
        b,
        c,
        h,
        w,
        k,
        stride,
        pad,
        oh,
        ow,
    };
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Conv2dOp { g, o, relu },
    )
}

/// `conv_transpose2d(x[b, h, w, ci], w[ci, co, k, k]) + bias[co]` → `[b, ho, wo, co]`
/// (channels-last), followed by ReLU when `relu`: the adjoint of a `conv2d` from
/// `[b, ho, wo, co]`, with `ho = (h − 1)·stride − 2·pad + k + output_padding`.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (stride, pad, output_padding): (usize, usize, usize),
    relu: bool,
) -> Result<Tensor> {
    let (b, h, w, ci) = x.dims4()?;
    let (wci, co, k, k2) = weight.dims4()?;
    if wci != ci || k != k2 {
        bail!("conv_transpose2d: input has {ci} channels, weight is [{wci}, {co}, {k}, {k2}]");
    }
    check_bias(bias, co, "conv_transpose2d")?;
    if stride == 0 || output_padding >= stride {
        bail!(
            "conv_transpose2d: output padding {output_padding} must be smaller than stride {stride}"
        );
    }
    let side = |n: usize| ((n - 1) * stride + k + output_padding).checked_sub(2 * pad);
    let (Some(ho), Some(wo)) = (side(h), side(w)) else {
        bail!("conv_transpose2d: padding {pad} too large for kernel {k}");
    };
    let g = Geometry {
        b,
        c: co,
        h: ho,
        w: wo,
        k,
        stride,
        pad,
        oh: h,
        ow: w,
    };
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        ConvTranspose2dOp { g, ci, relu },
    )
}

/// `[b, c, h, w]` → `[b, h, w, c]`, the layout of [`conv2d`] and [`conv_transpose2d`].
pub fn to_channels_last(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 2, 3, 1))?.contiguous()
}

/// `[b, h, w, c]` → `[b, c, h, w]`, candle's layout (and the export's flattening order).
pub fn to_channels_first(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 1, 2))?.contiguous()
}

/// A convolution layer using [`conv2d`] (channels-last tensors), with candle's parameter names
/// and initialisation, and the ReLU that follows it fused in when `relu`.
#[derive(Debug, Clone)]
pub struct FastConv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    pad: usize,
    relu: bool,
}

impl FastConv2d {
    /// Creates or loads `weight` `[out, in, k, k]` and `bias` `[out]` under `vb`.
    pub fn new(
        (input, output, k): (usize, usize, usize),
        stride: usize,
        pad: usize,
        relu: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv = candle_nn::conv2d(input, output, k, Default::default(), vb)?;
        let bias = conv
            .bias()
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("conv2d without bias".into()))?;
        Ok(Self {
            weight: conv.weight().clone(),
            bias,
            stride,
            pad,
            relu,
        })
    }
}

impl FastConv2d {
    /// The weight, `[out, in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for FastConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(
            x,
            &self.weight,
            &self.bias,
            self.stride,
            self.pad,
            self.relu,
        )
    }
}

/// A transposed convolution layer using [`conv_transpose2d`], with candle's names, and the ReLU
/// that follows it fused in when `relu`.
#[derive(Debug, Clone)]
pub struct FastConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    cfg: candle_nn::ConvTranspose2dConfig,
    relu: bool,
}

impl FastConvTranspose2d {
    /// Creates or loads `weight` `[in, out, k, k]` and `bias` `[out]` under `vb`.
    pub fn new(
        (input, output, k): (usize, usize, usize),
        cfg: candle_nn::ConvTranspose2dConfig,
        relu: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv = candle_nn::conv_transpose2d(input, output, k, cfg, vb)?;
        let bias = conv
            .bias()
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("conv_transpose2d without bias".into()))?;
        Ok(Self {
            weight: conv.weight().clone(),
            bias,
            cfg,
            relu,
        })
    }
}

impl Module for FastConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.cfg;
        conv_transpose2d(
            x,
            &self.weight,
            &self.bias,
            (c.stride, c.padding, c.output_padding),
            self.relu,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;
    use candle_core::{Device, Var};
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
    fn check(
        x: &[usize],
        w: &[usize],
        stride: usize,
        pad: usize,
        out_pad: Option<usize>,
        seed: u64,
    ) {
        let (xv, wv, bv) = (
            random(x, seed),
            random(w, seed + 1),
            random(&[if out_pad.is_some() { w[1] } else { w[0] }], seed + 2),
        );
        for relu in [false, true] {
            let xc = to_channels_last(&xv).unwrap();
            let ours = match out_pad {
                None => conv2d(&xc, &wv, &bv, stride, pad, relu).unwrap(),
                Some(op) => conv_transpose2d(&xc, &wv, &bv, (stride, pad, op), relu).unwrap(),
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
            k: 5,
            stride: 2,
            pad: 2,
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
    fn naive(x: &Tensor, w: &Tensor, r: &Tensor, stride: usize, pad: usize) -> [Vec<f64>; 4] {
        let v = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&x| f64::from(x))
                .collect::<Vec<_>>()
        };
        let ((b, c, h, wd), (o, _, k, _), (_, _, oh, ow)) =
            (x.dims4().unwrap(), w.dims4().unwrap(), r.dims4().unwrap());
        let (xs, ws, rs) = (v(x), v(w), v(r));
        let (mut y, mut gx, mut gw, mut gb) = (
            vec![0.0; b * o * oh * ow],
            vec![0.0; xs.len()],
            vec![0.0; ws.len()],
            vec![0.0; o],
        );
        for (bi, oi, oy, ox) in (0..b).flat_map(|bi| {
            (0..o).flat_map(move |oi| {
                (0..oh).flat_map(move |oy| (0..ow).map(move |ox| (bi, oi, oy, ox)))
            })
        }) {
            let yi = ((bi * o + oi) * oh + oy) * ow + ox;
            gb[oi] += rs[yi];
            for (ci, ki, kj) in
                (0..c).flat_map(|ci| (0..k).flat_map(move |ki| (0..k).map(move |kj| (ci, ki, kj))))
            {
                let (iy, ix) = (
                    (oy * stride + ki) as isize - pad as isize,
                    (ox * stride + kj) as isize - pad as isize,
                );
                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                    continue;
                }
                let xi = ((bi * c + ci) * h + iy as usize) * wd + ix as usize;
                let wi = ((oi * c + ci) * k + ki) * k + kj;
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
            ([3, 2, 11, 13], [5, 2, 5, 5], 3, 2),
            ([1, 1, 8, 7], [2, 1, 3, 3], 2, 1),
            // Kernels wider than the image: whole rows and columns of taps fall in the padding
            // (candle's own backward pass fails on these shapes, so no candle reference).
            ([2, 2, 2, 3], [3, 2, 5, 5], 2, 2),
            ([1, 1, 1, 1], [2, 1, 3, 3], 3, 1),
        ] {
            let (xv, wv, bv) = (random(&x, 20), random(&w, 21), random(&[w[0]], 22));
            let zero = Tensor::zeros(w[0], candle_core::DType::F32, &Device::Cpu).unwrap();
            let xc = to_channels_last(&xv).unwrap();
            let y =
                to_channels_first(&conv2d(&xc, &wv, &zero, stride, pad, false).unwrap()).unwrap();
            let up = random(y.dims(), 23);
            let want = naive(&xv, &wv, &up, stride, pad);
            let yb =
                to_channels_first(&conv2d(&xc, &wv, &bv, stride, pad, false).unwrap()).unwrap();
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
                close(got, &want, &format!("{x:?} {w:?} s{stride} p{pad} {what}"));
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
        assert!(conv2d(&x, &random(&[4, 3, 3, 3], 2), &b, 1, 0, false).is_err());
        assert!(conv2d(&x, &random(&[4, 1, 9, 9], 2), &b, 1, 0, false).is_err());
        assert!(conv2d(&x, &random(&[5, 1, 3, 3], 2), &b, 1, 0, false).is_err());
        assert!(conv2d(&x, &random(&[4, 1, 3, 3], 2), &b, 1, 0, false).is_ok());
    }
}
