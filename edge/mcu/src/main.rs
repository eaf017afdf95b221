//! A dekm sensor model on a Cortex-M7: the bundle in flash (`model.dekm`, a 3-channel model of
//! the demo's plant clustered on spectra; with the `int8` feature its int8 bundle, whose
//! encoder runs in integers), a static heap, and 320 recorded readings
//! (`readings.csv`, embedded as f32 by `build.rs`) pushed one at a time through a [`StreamSession`], one JSON line per window
//! on the semihosting console, then the heap's peak. `scripts/edge-targets.sh` compares the
//! lines with what `dekm-edge assign --stream` prints for the same readings on the host.
#![no_std]
#![no_main]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use dekm_edge::{Model, ModelParts, StreamSession};
use embedded_alloc::LlffHeap;

/// The model, read from flash where the bundle lies (`model.dekm`, or its int8 bundle with the
/// `int8` feature).
static MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model.dekm"));
/// Little-endian f32 readings, three channels each.
static READINGS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/readings.f32"));
/// Heap for the decoded model and the session's buffers.
const HEAP_SIZE: usize = 160 * 1024;
/// Values one window holds: 3 channels x 32 readings.
const WINDOW: usize = 96;

/// The heap, with the high-water mark of its use recorded.
struct PeakHeap {
    heap: LlffHeap,
    peak: AtomicUsize,
}

// SAFETY: every call goes to `LlffHeap`, a correct allocator; the peak is bookkeeping only.
unsafe impl GlobalAlloc for PeakHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let p = unsafe { self.heap.alloc(layout) };
        self.peak.fetch_max(self.heap.used(), Ordering::Relaxed);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: PeakHeap = PeakHeap {
    heap: LlffHeap::empty(),
    peak: AtomicUsize::new(0),
};

#[entry]
fn main() -> ! {
    static mut MEMORY: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
    // SAFETY: `entry` gives this function the only reference to MEMORY, and the heap is set up
    // once, before anything allocates.
    unsafe { HEAP.heap.init(MEMORY.as_mut_ptr() as usize, HEAP_SIZE) };
    let status = run();
    hprintln!(
        "heap: peak {} bytes of {}, {} in use at the end",
        HEAP.peak.load(Ordering::Relaxed),
        HEAP_SIZE,
        HEAP.heap.used()
    );
    debug::exit(if status.is_ok() {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Without a debugger attached the exit request returns: sleep.
    loop {
        cortex_m::asm::wfi();
    }
}

/// A panic (none is expected: the runtime reports bad input as errors) ends the run as failed.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    // Without a debugger attached the exit request returns: sleep.
    loop {
        cortex_m::asm::wfi();
    }
}

fn run() -> Result<(), ()> {
    let model = ModelParts::from_bundle(MODEL)
        .and_then(|parts| Model::from_parts(&parts))
        .map_err(|e| hprintln!("model: {}", e))?;
    hprintln!(
        "model: {} bytes in flash, k = {}, {} values a window; heap after loading {} bytes",
        MODEL.len(),
        model.k(),
        model.input_len(),
        HEAP.heap.used()
    );
    let mut stream =
        StreamSession::<'_, WINDOW>::new(&model).map_err(|e| hprintln!("stream: {}", e))?;
    let mut reading = [0f32; 3];
    for bytes in READINGS.chunks_exact(12) {
        for (v, b) in reading.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        match stream.push(&reading) {
            Ok(Some(w)) => hprintln!(
                "{{\"start\":{},\"cluster\":{},\"outlier\":{}}}",
                w.start,
                w.assignment.cluster,
                w.assignment.outlier
            ),
            Ok(None) => {}
            Err(e) => {
                hprintln!("reading: {}", e);
                return Err(());
            }
        }
    }
    Ok(())
}
