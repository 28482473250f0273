//! Aligned copy buffers that free themselves.
//!
//! `O_DIRECT` needs the buffer address, the file offset and the length aligned to the
//! device's logical block size; 4096 bytes covers every device this runs on. An
//! [`AlignedBuf`] is mapped and unmapped by the same type with the same length, so a
//! mismatched allocate/free pair (QEMU's old `qemu_blockalign` / `g_free` bug) cannot be
//! written: the only way to free one is to drop it.
//!
//! Buffers of [`HUGE_PAGE_BYTES`] or more start on a huge-page boundary and ask the kernel
//! for transparent huge pages. An O_DIRECT request is limited by the device's segment
//! count (254 on a virtio disk): with scattered 4 KiB pages a 4 MiB buffer reaches the
//! device as several requests of about 1 MiB, with 2 MiB pages as one.
//!
//! [`BufferPool`] keeps released buffers for reuse so a long copy allocates only as many
//! buffers as were ever in flight at once (the job bounds that by `buf_size`).

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Mutex;

use rustix::mm::{madvise, mmap_anonymous, munmap, Advice, MapFlags, ProtFlags};

/// Alignment of every copy buffer, in bytes (also the unit O_DIRECT I/O is checked against).
pub const ALIGN_BYTES: usize = 4096;

/// Size and alignment of a transparent huge page on x86-64 and most arm64 kernels; buffers
/// this large or larger are aligned to it and advised to use huge pages.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// A zero-initialised buffer of anonymous memory whose address is a multiple of
/// [`ALIGN_BYTES`] (of [`HUGE_PAGE_BYTES`] when it is at least that large).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    /// Bytes mapped (a multiple of [`ALIGN_BYTES`]).
    capacity: usize,
    /// Bytes in use (`<= capacity`); slices cover only these.
    len: usize,
}

// SAFETY: AlignedBuf uniquely owns its mapping (like Vec<u8>); no aliasing handles exist.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give `&[u8]`, which is Sync.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `capacity` bytes rounded up to the alignment (at least one block).
    /// Aborts, as an allocation failure does, when the kernel gives no memory.
    pub fn new(capacity: usize) -> Self {
        let capacity = Self::new_capacity(capacity);
        let huge = capacity >= HUGE_PAGE_BYTES;
        // A huge-page-aligned start is found inside a mapping one huge page longer; the
        // unused head and tail are unmapped again.
        let extra = if huge { HUGE_PAGE_BYTES } else { 0 };
        let ptr = map(capacity + extra);
        let start = if huge {
            let addr = ptr as usize;
            let aligned = addr.next_multiple_of(HUGE_PAGE_BYTES);
            let (head, tail) = (aligned - addr, extra - (aligned - addr));
            // SAFETY: both ranges lie inside the mapping just made and are never used.
            unsafe {
                if head > 0 {
                    let _ = munmap(ptr, head);
                }
                if tail > 0 {
                    let _ = munmap((aligned + capacity) as *mut c_void, tail);
                }
            }
            // SAFETY: the range is this buffer's own, untouched mapping. Advice only: a
            // kernel without transparent huge pages refuses it and small pages serve.
            let _ = unsafe { madvise(aligned as *mut c_void, capacity, Advice::LinuxHugepage) };
            aligned as *mut u8
        } else {
            ptr.cast::<u8>()
        };
        let ptr = NonNull::new(start).expect("mmap never maps address zero");
        Self { ptr, capacity, len: capacity }
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the bytes in use; `len` must not exceed the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "buffer length {len} exceeds capacity {}", self.capacity());
        self.len = len;
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for `capacity` initialised bytes (anonymous mappings read as
        // zero until written) and len <= capacity.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes in use, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The capacity `new(capacity)` would allocate.
    fn new_capacity(capacity: usize) -> usize {
        capacity.max(1).div_ceil(ALIGN_BYTES) * ALIGN_BYTES
    }
}

/// A private anonymous read-write mapping of `len` bytes (a multiple of the page size).
fn map(len: usize) -> *mut c_void {
    // SAFETY: a new anonymous mapping at an address of the kernel's choice aliases nothing.
    match unsafe { mmap_anonymous(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE) }
    {
        Ok(ptr) => ptr,
        Err(_) => std::alloc::handle_alloc_error(
            std::alloc::Layout::from_size_align(len, ALIGN_BYTES).expect("a page-multiple length"),
        ),
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: exactly this range was mapped for this buffer and is unmapped once, here.
        unsafe {
            let _ = munmap(self.ptr.as_ptr().cast(), self.capacity);
        }
    }
}

/// A free list of equally sized aligned buffers.
pub struct BufferPool {
    buffer_bytes: usize,
    free: Mutex<Vec<AlignedBuf>>,
}

impl BufferPool {
    /// A pool handing out buffers of at least `buffer_bytes` bytes.
    pub fn new(buffer_bytes: usize) -> Self {
        Self { buffer_bytes: buffer_bytes.max(1), free: Mutex::new(Vec::new()) }
    }

    /// A buffer of `len` bytes in use (`len` at most the pool's buffer size; larger requests
    /// get a one-off buffer that is not kept).
    pub fn take(&self, len: usize) -> AlignedBuf {
        let mut buf = if len <= self.buffer_bytes {
            let reused = self.free.lock().expect("buffer pool lock poisoned").pop();
            reused.unwrap_or_else(|| AlignedBuf::new(self.buffer_bytes))
        } else {
            AlignedBuf::new(len)
        };
        buf.set_len(len);
        buf
    }

    /// Returns a buffer for reuse (buffers of another size are simply dropped).
    pub fn give_back(&self, buf: AlignedBuf) {
        if buf.capacity() == AlignedBuf::new_capacity(self.buffer_bytes) {
            self.free.lock().expect("buffer pool lock poisoned").push(buf);
        }
    }
}

/// Whether every byte is zero (word at a time; the compiler vectorises the fold).
pub fn is_all_zero(bytes: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; align_to only reinterprets the middle part.
    let (head, words, tail) = unsafe { bytes.align_to::<u128>() };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && words.chunks(64).all(|block| block.iter().fold(0u128, |acc, &w| acc | w) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_reused() {
        let pool = BufferPool::new(10_000);
        let a = pool.take(5000);
        assert_eq!(a.as_slice().as_ptr() as usize % ALIGN_BYTES, 0);
        assert_eq!(a.as_slice().len(), 5000);
        assert_eq!(a.capacity(), 12288);
        let addr = a.as_slice().as_ptr();
        pool.give_back(a);
        let b = pool.take(100);
        assert_eq!(b.as_slice().as_ptr(), addr);
    }

    #[test]
    fn zero_check_sees_every_byte() {
        let mut buf = AlignedBuf::new(8192);
        assert!(is_all_zero(buf.as_slice()));
        for i in [0usize, 17, 4095, 8191] {
            buf.as_mut_slice()[i] = 1;
            assert!(!is_all_zero(buf.as_slice()));
            assert!(!is_all_zero(&buf.as_slice()[1..]) || i == 0);
            buf.as_mut_slice()[i] = 0;
        }
    }
}
