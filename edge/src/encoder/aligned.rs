//! Buffers whose values start on a cache line.

use alloc::{vec, vec::Vec};
use core::ops::{Deref, DerefMut};

/// A cache line, and AVX-512's vector: 64 bytes.
const LINE: usize = 64;

/// A fixed-length run of values starting on a 64-byte boundary. The register tiles load
/// weights and store outputs a whole vector at a time; from a plain `Vec` (16-byte aligned by
/// the allocator) half of AVX2's loads and three quarters of AVX-512's straddle two cache
/// lines, and where a buffer happens to land decided the speed: the same int8 AVX2 build ran
/// at 133 or 175 µs an image depending on its weights' address modulo 64.
#[derive(Debug)]
pub(super) struct Aligned<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// `len` default values.
    pub(super) fn new(len: usize) -> Self {
        Self::from_slice(&vec![T::default(); len])
    }

    /// A copy of `values`.
    pub(super) fn from_slice(values: &[T]) -> Self {
        let size = size_of::<T>().max(1);
        let mut buf = vec![T::default(); values.len() + LINE / size];
        // Bytes to the next line, a whole number of values since `buf` is aligned for `T`
        // (whose size divides 64 for every type stored here).
        let start = (buf.as_ptr() as usize).wrapping_neg() % LINE / size;
        buf[start..start + values.len()].copy_from_slice(values);
        Self {
            buf,
            start,
            len: values.len(),
        }
    }
}

impl<T: Copy + Default> From<Vec<T>> for Aligned<T> {
    fn from(values: Vec<T>) -> Self {
        Self::from_slice(&values)
    }
}

impl<T: Copy + Default> Clone for Aligned<T> {
    /// A clone is a new allocation, aligned afresh (copying `start` would not be).
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl<T> Deref for Aligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_start_on_a_line_and_stay_there_when_cloned() {
        for len in [0, 1, 17, 1000] {
            let values: Vec<i16> = (0..len as i16).collect();
            let a = Aligned::from(values.clone());
            let b = a.clone();
            for v in [&a, &b] {
                assert_eq!(v.as_ptr() as usize % LINE, 0);
                assert_eq!(&v[..], &values[..]);
            }
            let mut f = Aligned::<f32>::new(len);
            assert_eq!(f.as_ptr() as usize % LINE, 0);
            f.fill(1.0);
            assert!(f.iter().all(|&v| v == 1.0) && f.len() == len);
        }
    }
}
