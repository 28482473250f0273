//! [`MirrorSetup`]: the choices a mirror starts with besides its two sides, and their
//! defaults.

use blockmirror_core::job::MirrorConfig;

use crate::faults::InjectedFault;
use crate::image::ImageFormat;

/// Everything needed to start a mirror, besides the source and the target.
#[derive(Debug, Clone)]
pub struct MirrorSetup {
    /// The job's configuration (`length` and `discard_reads_zero` are filled in here).
    pub config: MirrorConfig,
    /// O_DIRECT on both files' copy handles (on the source's alone with an NBD target).
    pub direct: bool,
    /// Mirror into an existing target of the same size. An NBD export always exists and is
    /// used as it is, whatever this says.
    pub reuse: bool,
    /// Zero writes may deallocate (punch holes) on the target.
    pub unmap: bool,
    /// Open the source writable so `guest_write` works.
    pub guest_writes: bool,
    /// With `direct`: submit copy reads and writes through io_uring (falls back to the
    /// worker threads where the kernel refuses it).
    pub io_uring: bool,
    /// Let ranges that hold data be copied inside the kernel (`copy_file_range`) when both
    /// sides are regular files and `direct` is off.
    pub offload: bool,
    /// Faults to inject.
    pub faults: Vec<InjectedFault>,
    /// Take QEMU-compatible image locks on the source (see [`locks`](crate::locks)), so
    /// that a QEMU, `qemu-nbd` or `qemu-io` writing it refuses to start, and the mirror
    /// refuses a source such a program writes. Turn it off when this process already holds
    /// the source's lock on a descriptor of its own (a server that serves the source and
    /// mirrors it): locks of two open file descriptions conflict even within one process,
    /// so the mirror's own lock would be refused.
    pub lock_source: bool,
    /// Take QEMU-compatible image locks on the target (see `lock_source` for why a caller
    /// would turn it off). Not for an NBD target: its server locks its own image.
    pub lock_target: bool,
    /// The source's format; `None` probes it (a qcow2 magic means qcow2, else raw; block
    /// devices are raw). A qcow2 source is read (and written by the guest) through its
    /// backing chain; O_DIRECT, io_uring and in-kernel copies apply to raw files only.
    pub format: Option<ImageFormat>,
    /// The target's format; `None` probes an existing target and gives a created one the
    /// source's format.
    pub target_format: Option<ImageFormat>,
    /// Keep a persistent write-intent bitmap file (see [`persist`](crate::persist)), or
    /// resume from one.
    pub bitmap: Option<crate::persist::BitmapSetup>,
}

impl Default for MirrorSetup {
    /// The job's defaults ([`MirrorConfig::new`]) with buffered I/O into a new sparse target:
    /// no O_DIRECT (so no io_uring), no reuse of an existing target, holes punched for zero
    /// ranges, guest writes possible, in-kernel copies where the files allow, no
    /// faults, both images locked, formats probed. The same choices as the Python `FileMirror`'s defaults.
    fn default() -> Self {
        Self {
            config: MirrorConfig::new(0),
            direct: false,
            reuse: false,
            unmap: true,
            guest_writes: true,
            io_uring: true,
            offload: true,
            faults: Vec::new(),
            lock_source: true,
            lock_target: true,
            format: None,
            target_format: None,
            bitmap: None,
        }
    }
}
