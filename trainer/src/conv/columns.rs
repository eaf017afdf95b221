//! The column matrix and its GEMMs: a convolution's geometry, `im2col` / `col2im` on
//! channels-last images in whole-vector runs, the batch cut into tasks with per-thread scratch,
//! and the checked GEMM calls through `dekm-kernels`; everything the ops in `ops` share.

use std::cell::RefCell;

use candle_core::{CpuStorage, Device, Layout, Result, Shape, Storage, Tensor, bail};
use dekm_kernels::Operand;
use rayon::prelude::*;

/// Shape of one convolution: channels-last input `[b, h, w, c]`, a `kh x kw` kernel (`1 x k`
/// for a convolution over time), output spatial size `oh x ow`. For a transposed convolution it describes the forward convolution
/// whose adjoint it is (`c, h, w` are the transposed convolution's output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) b: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) ph: usize,
    pub(super) pw: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
}

impl Geometry {
    /// Kernel taps, `kh·kw`.
    pub(super) fn taps_per_patch(&self) -> usize {
        self.kh * self.kw
    }

    /// Columns of the column matrix, one per `(ki, kj, channel)`: the length of a patch.
    pub(super) fn patch(&self) -> usize {
        self.taps_per_patch() * self.c
    }

    /// Output positions per image.
    pub(super) fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Floats of one input image.
    pub(super) fn image(&self) -> usize {
        self.h * self.w * self.c
    }

    /// Input coordinate read by output `o` at kernel offset `kk` along an axis of `limit`
    /// pixels padded by `pad`, if inside the image.
    pub(super) fn src(&self, o: usize, kk: usize, (limit, pad): (usize, usize)) -> Option<usize> {
        (o * self.stride + kk)
            .checked_sub(pad)
            .filter(|&i| i < limit)
    }

    /// For every output position (outer) and kernel tap `ki·kw + kj` (inner), the input pixel
    /// it reads, `usize::MAX` where it falls in the padding; computed once per call.
    pub(super) fn taps(&self) -> Vec<usize> {
        let g = *self;
        let kk = g.taps_per_patch();
        (0..g.positions() * kk)
            .map(|i| {
                let (o, t) = (i / kk, i % kk);
                let iy = g.src(o / g.ow, t / g.kw, (g.h, g.ph));
                match (iy, g.src(o % g.ow, t % g.kw, (g.w, g.pw))) {
                    (Some(iy), Some(ix)) => iy * g.w + ix,
                    _ => usize::MAX,
                }
            })
            .collect()
    }

    /// The batch cut into consecutive runs of images, [`TASKS_PER_THREAD`] per thread so that a
    /// core slowed by a neighbour does not hold the others up. The split depends only on the
    /// batch size and the thread count, so the order of every floating-point sum does too.
    pub(super) fn tasks(&self) -> Vec<Images> {
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
    pub(super) fn sub_chunks(&self, task: Images) -> impl Iterator<Item = Images> + use<> {
        let per_image = (self.patch() * self.positions()).max(1);
        let len = (SUB_FLOATS / per_image).max(1);
        let end = task.first + task.len;
        (task.first..end).step_by(len).map(move |first| Images {
            first,
            len: len.min(end - first),
        })
    }

    /// `x[b, h, w, c]` → `out[images·oh·ow, kh·kw·c]` for the images of `images`; column
    /// `(ki, kj, ci)` matches a weight permuted to `[O, kh, kw, C]` (see [`swap_inner`]). Every
    /// element of `out` is written, so it may hold stale scratch data.
    pub(super) fn im2col(&self, x: &[f32], taps: &[usize], images: Images, out: &mut [f32]) {
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

    /// The adjoint of [`Self::im2col`]: adds the patches of `cols[images·oh·ow, kh·kw·c]` into the
    /// images `images` of `out`, which holds the images of `task` (`images` lies inside it) and
    /// the starting values (zeros, or a bias).
    pub(super) fn col2im_add(
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
pub(super) fn copy(dst: &mut [f32], src: &[f32]) {
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
pub(super) fn add(dst: &mut [f32], src: &[f32]) {
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
pub(super) const TASKS_PER_THREAD: usize = 4;

/// Floats in the column matrix of one sub-chunk (1 MiB, a Zen 4 core's L2 cache).
pub(super) const SUB_FLOATS: usize = 1 << 18;

/// A run of consecutive images of a batch, processed together.
#[derive(Debug, Clone, Copy)]
pub(super) struct Images {
    pub(super) first: usize,
    pub(super) len: usize,
}

/// Cuts a batch tensor with `per_image` floats per image into the tasks' parts.
pub(super) fn split_tasks<'a>(
    data: &'a mut [f32],
    tasks: &[Images],
    per_image: usize,
) -> Vec<&'a mut [f32]> {
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
pub(super) fn swap_inner(x: &[f32], (a, b, c): (usize, usize, usize)) -> Vec<f32> {
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
pub(super) struct Scratch {
    /// The column matrix.
    pub(super) cols: Vec<f32>,
    /// The upstream gradient, ReLU undone.
    pub(super) grad: Vec<f32>,
}

thread_local! {
    /// Each thread's buffers, kept between calls: a fresh allocation would cost page faults
    /// every training step.
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Runs `f` with this thread's buffers (fresh ones if they are already in use).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Runs `f(task, part, scratch)` for every task on rayon's threads, each task with its part of
/// the output and its thread's scratch buffers; the results come back in task order.
pub(super) fn run_tasks<P: Send, R: Send>(
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
pub(super) fn grow(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

pub(super) fn op(data: &[f32], ld: usize, transposed: bool) -> Operand<'_> {
    Operand {
        data,
        ld,
        transposed,
    }
}

/// `c = a·b`, or `c += a·b` when `accumulate`, on the calling thread (the tasks are the
/// parallelism; see [`dekm_kernels::gemm`]).
pub(super) fn gemm(
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
pub(super) struct Partial {
    pub(super) dw: Vec<f32>,
    pub(super) db: Vec<f64>,
}

impl Partial {
    pub(super) fn new(w: usize, b: usize) -> Self {
        Self {
            dw: vec![0.0; w],
            db: vec![0.0; b],
        }
    }

    /// Adds the pixels of `gy[pixels, channels]` to the bias gradient.
    pub(super) fn add_bias_grad(&mut self, gy: &[f32]) {
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
pub(super) fn sum_partials(partials: Vec<Partial>) -> (Vec<f32>, Vec<f32>) {
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

pub(super) fn contiguous<'a>(
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
pub(super) fn with_tensors<const N: usize, R>(
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
pub(super) fn bias_relu(out: &mut [f32], bias: &[f32], relu: bool) {
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
pub(super) fn pre_activation<'a>(
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

pub(super) fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// The input gradient split into the tasks' parts (`None` for every task when no input
/// gradient is needed).
pub(super) fn gradient_parts<'a>(
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
