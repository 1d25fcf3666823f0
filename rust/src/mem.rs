//! Output buffers for large results.
//!
//! An n×m result of tens of MB is written once, right after allocation; with
//! 4 KiB pages every first touch is a page fault (about a fifth of the time of
//! a 4096×4096 distance matrix). On Linux we ask for transparent huge pages on
//! the 2 MiB-aligned interior of the buffer, which turns thousands of faults
//! into dozens. The buffer stays an ordinary `Vec`, allocated and freed by the
//! global allocator; the advice is only a hint and failures are ignored.

use crate::Real;

/// Below this size the hint is not worth a system call.
const HUGE_MIN_BYTES: usize = 8 << 20;

/// A zero-filled vector of `len` values, backed by huge pages where the OS allows.
pub fn zeroed_large<T: Real>(len: usize) -> Vec<T> {
    let v = vec![T::zero(); len];
    #[cfg(target_os = "linux")]
    advise_huge(&v);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge<T>(v: &[T]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(v);
    if bytes < HUGE_MIN_BYTES {
        return;
    }
    let start = v.as_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + bytes) / HUGE * HUGE;
    if end > aligned {
        // SAFETY: the range lies inside `v`'s allocation; MADV_HUGEPAGE changes no
        // contents (the pages are still untouched zero pages) and may fail harmlessly.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, end - aligned, libc::MADV_HUGEPAGE);
        }
    }
}
