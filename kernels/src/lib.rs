//! One safe entry point to the `gemm` crate's f32 matrix multiply (the kernels candle uses:
//! runtime-dispatched AVX2/FMA/AVX-512 micro-kernels), for the trainer's fused convolutions and
//! the edge encoder.
//!
//! `gemm::gemm` takes raw pointers and strides; this crate is the only place in the workspace
//! that calls it, after checking that every element the strides address lies inside its slice.
//! That keeps `unsafe` in one audited function instead of one per caller.
#![cfg_attr(not(feature = "std"), no_std)]

/// A matrix operand: element `(i, j)` at `data[i·ld + j]`, or at `data[j·ld + i]` when
/// `transposed` (the matrix is stored as its transpose).
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    /// Backing values.
    pub data: &'a [f32],
    /// Leading dimension (elements between consecutive stored rows).
    pub ld: usize,
    /// Stored as the transpose.
    pub transposed: bool,
}

impl<'a> Operand<'a> {
    /// A row-major matrix with leading dimension `ld`.
    pub fn rows(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            ld,
            transposed: false,
        }
    }

    /// A matrix stored as its row-major transpose with leading dimension `ld`.
    pub fn transposed(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            ld,
            transposed: true,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        if self.transposed {
            fits(cols, rows, self.ld, self.data.len())
        } else {
            fits(rows, cols, self.ld, self.data.len())
        }
    }

    /// (row stride, column stride).
    fn strides(&self) -> (isize, isize) {
        let ld = self.ld as isize;
        if self.transposed { (1, ld) } else { (ld, 1) }
    }
}

/// An operand is smaller than the shape it is used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gemm {m}x{k}x{n}: an operand is smaller than its shape")]
pub struct ShapeError {
    /// Rows of the product.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of the product.
    pub n: usize,
}

/// True when a `rows×cols` row-major matrix with leading dimension `ld` lies inside `len`
/// elements.
fn fits(rows: usize, cols: usize, ld: usize, len: usize) -> bool {
    rows == 0
        || cols == 0
        || (cols <= ld
            && (rows - 1)
                .checked_mul(ld)
                .and_then(|v| v.checked_add(cols))
                .is_some_and(|end| end <= len))
}

/// `c = a·b`, or `c += a·b` when `accumulate`: `a` is `m×k`, `b` is `k×n`, `c` is `m×n`
/// row-major with leading dimension `ldc`. `threads > 1` splits the work over rayon's pool
/// (with the `rayon` feature; otherwise it runs on the calling thread).
#[allow(unsafe_code)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    a: Operand,
    b: Operand,
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
    threads: usize,
) -> Result<(), ShapeError> {
    if !a.fits(m, k) || !b.fits(k, n) || !fits(m, n, ldc, c.len()) {
        return Err(ShapeError { m, k, n });
    }
    let ((a_rs, a_cs), (b_rs, b_cs)) = (a.strides(), b.strides());
    #[cfg(feature = "rayon")]
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    #[cfg(not(feature = "rayon"))]
    let parallelism = {
        let _ = threads;
        gemm::Parallelism::None
    };
    // SAFETY: the checks above guarantee that every element addressed through these strides
    // (a: m×k, b: k×n, c: m×n) lies inside its slice, and `c` is a unique borrow, so it aliases
    // neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_plain_transposed_and_accumulating() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|v| 1.0 - v as f32 * 0.25).collect();
        let want = naive(m, n, k, &a, &b);
        let mut c = vec![0f32; m * n];
        gemm(
            (m, n, k),
            Operand::rows(&a, k),
            Operand::rows(&b, n),
            (&mut c, n),
            false,
            1,
        )
        .unwrap();
        assert_eq!(c, want);
        // a stored transposed: at[p][i] = a[i][p].
        let at: Vec<f32> = (0..k * m).map(|v| a[(v % m) * k + v / m]).collect();
        gemm(
            (m, n, k),
            Operand::transposed(&at, m),
            Operand::rows(&b, n),
            (&mut c, n),
            true,
            1,
        )
        .unwrap();
        let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
        assert_eq!(c, twice);
    }

    #[test]
    fn short_operands_are_errors_not_reads_out_of_bounds() {
        let a = [1.0; 5];
        let b = [1.0; 6];
        let mut c = [0.0; 4];
        let err = gemm(
            (2, 2, 3),
            Operand::rows(&a, 3),
            Operand::rows(&b, 2),
            (&mut c, 2),
            false,
            1,
        );
        assert_eq!(err, Err(ShapeError { m: 2, k: 3, n: 2 }));
        let a = [1.0; 6];
        let mut small = [0.0; 3];
        let err = gemm(
            (2, 2, 3),
            Operand::rows(&a, 3),
            Operand::rows(&b, 2),
            (&mut small, 2),
            false,
            1,
        );
        assert!(err.is_err());
    }
}
