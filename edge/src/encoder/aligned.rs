//! Buffers whose values start on a cache line, the large ones on huge pages where the
//! kernel offers them.

use alloc::{vec, vec::Vec};
use core::ops::{Deref, DerefMut};

use bytemuck::Pod;

/// A cache line, and AVX-512's vector: 64 bytes.
const LINE: usize = 64;

/// A fixed-length run of values starting on a 64-byte boundary. The register tiles load
/// weights and store outputs a whole vector at a time; from a plain `Vec` (16-byte aligned by
/// the allocator) half of AVX2's loads and three quarters of AVX-512's straddle two cache
/// lines, and where a buffer happens to land decided the speed: the same int8 AVX2 build ran
/// at 133 or 175 µs an image depending on its weights' address modulo 64.
///
/// With `std` on x86-64 Linux, a buffer of [`HUGE_MIN`] bytes or more (a large layer's
/// weights, a workspace's f32 buffers) is instead an anonymous mapping advised `MADV_HUGEPAGE`, starting on a 2 MiB
/// boundary, so the kernel backs it with one transparent huge page where it can. On 4 KiB pages
/// the same AVX2 encoder ran at 63 or 80-90 µs an image on an AMD Zen 4 depending on where the
/// kernel put the pages, process by process; on huge pages every run was fast
/// (docs/RESULTS.md, "The edge encoder on an AMD Zen 4"). The price is up to 2 MiB of memory
/// per such buffer; where the mapping or the advice fails, the buffer is an ordinary one.
#[derive(Debug)]
pub(super) struct Aligned<T> {
    store: Store<T>,
    len: usize,
}

/// Bytes from which a buffer goes on huge pages.
#[cfg(all(feature = "std", target_os = "linux", target_arch = "x86_64"))]
pub(super) const HUGE_MIN: usize = 64 << 10;

/// Where an [`Aligned`] buffer's values live.
#[derive(Debug)]
enum Store<T> {
    /// From the allocator, `start` values in.
    Heap { buf: Vec<T>, start: usize },
    /// An anonymous mapping, `start` bytes in (a 2 MiB boundary).
    #[cfg(all(feature = "std", target_os = "linux", target_arch = "x86_64"))]
    Pages { map: memmap2::MmapMut, start: usize },
}

impl<T: Pod + Default> Aligned<T> {
    /// `len` default values (zero bytes, for the `Pod` numbers stored here), without a
    /// temporary copy: a model's layers are built in place, where a microcontroller's heap has
    /// no room for a second copy of one.
    pub(super) fn new(len: usize) -> Self {
        #[cfg(all(feature = "std", target_os = "linux", target_arch = "x86_64"))]
        if len * size_of::<T>() >= HUGE_MIN
            && let Some(pages) = Self::huge_pages(len)
        {
            return pages;
        }
        let size = size_of::<T>().max(1);
        let buf = vec![T::default(); len + LINE / size];
        // Values to the next line, a whole number since `buf` is aligned for `T` (whose size
        // divides 64 for every type stored here).
        let start = (buf.as_ptr() as usize).wrapping_neg() % LINE / size;
        Self {
            store: Store::Heap { buf, start },
            len,
        }
    }

    /// A copy of `values`.
    pub(super) fn from_slice(values: &[T]) -> Self {
        let mut out = Self::new(values.len());
        out.copy_from_slice(values);
        out
    }

    /// `len` zero values in an anonymous mapping advised `MADV_HUGEPAGE` from a 2 MiB
    /// boundary, or `None` where the kernel refuses the mapping or the advice (no transparent
    /// huge pages).
    #[cfg(all(feature = "std", target_os = "linux", target_arch = "x86_64"))]
    fn huge_pages(len: usize) -> Option<Self> {
        const HUGE: usize = 2 << 20;
        let span = (len * size_of::<T>()).div_ceil(HUGE) * HUGE;
        let map = memmap2::MmapOptions::new()
            .len(span + HUGE)
            .map_anon()
            .ok()?;
        let start = (map.as_ptr() as usize).wrapping_neg() % HUGE;
        // Advised before the first write, so the first touch faults in a huge page.
        map.advise_range(memmap2::Advice::HugePage, start, span)
            .ok()?;
        Some(Self {
            store: Store::Pages { map, start },
            len,
        })
    }
}

impl<T: Pod + Default> From<Vec<T>> for Aligned<T> {
    fn from(values: Vec<T>) -> Self {
        Self::from_slice(&values)
    }
}

impl<T: Pod + Default> Clone for Aligned<T> {
    /// A clone is a new allocation, aligned afresh (copying `start` would not be).
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl<T: Pod> Deref for Aligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.store {
            Store::Heap { buf, start } => &buf[*start..*start + self.len],
            #[cfg(all(feature = "std", target_os = "linux", target_arch = "x86_64"))]
            Store::Pages { map, start } => {
                bytemuck::cast_slice(&map[*start..*start + self.len * size_of::<T>()])
            }
        }
    }
}

impl<T: Pod> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.store {
            Store::Heap { buf, start } => &mut buf[*start..*start + self.len],
            #[cfg(all(feature = "std", target_os = "linux", target_arch = "x86_64"))]
            Store::Pages { map, start } => {
                bytemuck::cast_slice_mut(&mut map[*start..*start + self.len * size_of::<T>()])
            }
        }
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

    /// A large buffer holds its values as a small one does, on a line (with std on x86-64
    /// Linux, from a 2 MiB boundary when the kernel gave the mapping), and so does its clone.
    #[test]
    fn large_buffers_hold_their_values() {
        let values: Vec<f32> = (0..40_000).map(|i| i as f32 * 0.5).collect();
        let a = Aligned::from(values.clone());
        let b = a.clone();
        for v in [&a, &b] {
            assert_eq!(&v[..], &values[..]);
            assert_eq!(v.as_ptr() as usize % LINE, 0);
            #[cfg(all(feature = "std", target_os = "linux", target_arch = "x86_64"))]
            if matches!(v.store, Store::Pages { .. }) {
                assert_eq!(v.as_ptr() as usize % (2 << 20), 0);
            }
        }
        let mut c = Aligned::<i32>::new(HUGE_LEN);
        c[HUGE_LEN - 1] = 7;
        assert_eq!((c.len(), c[0], c[HUGE_LEN - 1]), (HUGE_LEN, 0, 7));
    }

    /// Values in a buffer past the huge-page threshold.
    const HUGE_LEN: usize = 20_000;
}
