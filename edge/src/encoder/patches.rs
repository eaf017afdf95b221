//! The patch matrix of a layer whose input has few channels (an image's first, a sensor's),
//! gathered before its register tiles run (`conv`), so that they reduce over a pixel's
//! `taps × channels` values in one run.

use alloc::vec::Vec;

use dekm_shared::{ConvGeometry, Extent};

/// How a few-channel layer gathers its patch matrix: the input is first copied with its
/// padding as zeros and its channels unpadded, so that a kernel row's `kernel width ×
/// channels` values are contiguous there, then each pixel's kernel rows are copied into the
/// patch [`CHUNK`] values at a time (past a row's end into the next row's place, which is
/// written next; the scratch has room after the last). Gathered value by value through the
/// tap offsets, MNIST's 4,900 patch values took 2.2 µs of its 5.2 µs first layer.
#[derive(Debug, Clone)]
pub(super) struct Patches {
    /// Rows and columns of the padded copy: what the taps reach, padding included.
    extent: Extent,
    /// The pixel stride of the input the copy is made from.
    in_stride: usize,
    /// `[output pixel, kernel row]`: the offset of the row's first value in the copy.
    rows: Vec<u32>,
    /// `[output pixel]`: the offset of the pixel's patch in the patch matrix (what the tiles
    /// read).
    pub(super) starts: Vec<u32>,
}

/// Values copied at a time by the gather, and so the room it needs after each buffer.
const CHUNK: usize = 8;

impl Patches {
    pub(super) fn new(g: &ConvGeometry, in_stride: usize) -> Self {
        let (k, s, cin) = (g.kernel, g.stride, g.input.channels);
        let extent = Extent {
            height: (g.output.height - 1) * s + k.height,
            width: (g.output.width - 1) * s + k.width,
        };
        let pixels = g.output.height * g.output.width;
        let mut rows = Vec::with_capacity(pixels * k.height);
        for oy in 0..g.output.height {
            for ox in 0..g.output.width {
                for ki in 0..k.height {
                    rows.push((((oy * s + ki) * extent.width + ox * s) * cin) as u32);
                }
            }
        }
        let patch = k.area() * cin;
        Self {
            extent,
            in_stride,
            rows,
            starts: (0..pixels).map(|p| (p * patch) as u32).collect(),
        }
    }

    /// Values of the padded copy, with room for the last chunk and rounded to a cache line,
    /// so that the patch matrix after it starts on one.
    fn copy_len(&self, channels: usize) -> usize {
        (self.extent.height * self.extent.width * channels + CHUNK).next_multiple_of(16)
    }

    /// Values of the padded copy and the patch matrix after it.
    pub(super) fn len(&self, g: &ConvGeometry) -> usize {
        let patch = g.kernel.area() * g.input.channels;
        self.copy_len(g.input.channels) + self.starts.len() * patch + CHUNK
    }

    /// Gathers the patch matrix of `x` (geometry `g`) into `scratch` and returns it.
    pub(super) fn gather<'a>(
        &self,
        g: &ConvGeometry,
        x: &[f32],
        scratch: &'a mut [f32],
    ) -> &'a [f32] {
        let cin = g.input.channels;
        let (copy, patches) = scratch[..self.len(g)].split_at_mut(self.copy_len(cin));
        copy.fill(0.0);
        // Rows and columns past the last one a tap reaches are left out.
        let (height, width) = (
            g.input
                .height
                .min(self.extent.height.saturating_sub(g.pad.height)),
            g.input
                .width
                .min(self.extent.width.saturating_sub(g.pad.width)),
        );
        let row_len = self.extent.width * cin;
        for y in 0..height {
            let dst = &mut copy[(y + g.pad.height) * row_len + g.pad.width * cin..][..width * cin];
            let src = &x[y * g.input.width * self.in_stride..];
            if self.in_stride == cin {
                dst.copy_from_slice(&src[..width * cin]);
            } else {
                for (d, s) in dst.chunks_exact_mut(cin).zip(src.chunks(self.in_stride)) {
                    for (d, &s) in d.iter_mut().zip(s) {
                        *d = s;
                    }
                }
            }
        }
        pulp::Arch::new().dispatch(GatherRows {
            rows: &self.rows,
            run: g.kernel.width * cin,
            copy,
            patches,
        });
        patches
    }
}

/// The kernel rows `rows` (offsets in `copy`) of `run` values each, one after the other into
/// `patches`, [`CHUNK`] values at a time. Compiled for the CPU's vectors (pulp's dispatch) and
/// with a row's chunk count as a constant, so that a chunk is one load and one store: as plain
/// x86-64 code, or with the count a variable (a call to `memcpy` a chunk), MNIST's 980 rows
/// took 1.4-1.6 µs rather than 0.8.
struct GatherRows<'a> {
    rows: &'a [u32],
    run: usize,
    copy: &'a [f32],
    patches: &'a mut [f32],
}

impl pulp::WithSimd for GatherRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self {
            rows,
            run,
            copy,
            patches,
        } = self;
        match run.div_ceil(CHUNK) {
            1 => copy_rows::<1>(rows, run, copy, patches),
            2 => copy_rows::<2>(rows, run, copy, patches),
            3 => copy_rows::<3>(rows, run, copy, patches),
            4 => copy_rows::<4>(rows, run, copy, patches),
            n => {
                for (i, &at) in rows.iter().enumerate() {
                    let src = &copy[at as usize..][..n * CHUNK];
                    patches[i * run..][..n * CHUNK].copy_from_slice(src);
                }
            }
        }
    }
}

/// [`GatherRows`] for rows of `N` chunks.
#[inline(always)]
fn copy_rows<const N: usize>(rows: &[u32], run: usize, copy: &[f32], patches: &mut [f32]) {
    for (i, &at) in rows.iter().enumerate() {
        let src = copy[at as usize..][..N * CHUNK].as_chunks::<CHUNK>().0;
        let dst = patches[i * run..][..N * CHUNK].as_chunks_mut::<CHUNK>().0;
        if let (Ok(d), Ok(s)) = (
            <&mut [[f32; CHUNK]; N]>::try_from(dst),
            <&[[f32; CHUNK]; N]>::try_from(src),
        ) {
            *d = *s;
        }
    }
}
