//! What a running mirror lends out beyond its job: new descriptors of its files, its NBD
//! connection, and warnings about the image locks it could not take.

use std::sync::Arc;

use crate::target::{ImageTarget, NbdTarget, TargetSide};

use super::FileMirror;

impl FileMirror {

    /// A new descriptor of the target's buffered (no O_DIRECT) handle: the same open file
    /// description, so it keeps the target's image lock after the mirror is dropped (the
    /// lock goes only when every descriptor of the description is closed). A server keeps
    /// serving the target through it after the switch-over. An NBD target has no file:
    /// this fails with `Unsupported` (see [`nbd_target`](Self::nbd_target)).
    pub fn target_handle(&self) -> std::io::Result<std::fs::File> {
        match &self.shared.files.target {
            TargetSide::File(side) => side.buffered.try_clone(),
            TargetSide::Image(image) => image.side.buffered.try_clone(),
            TargetSide::Nbd(nbd) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("the target is the NBD export {}, not a file", nbd.uri()),
            )),
        }
    }

    /// The NBD target, when the mirror writes to one: the connection the mirror itself
    /// uses (made again after a failure), so that a server keeps serving the disk from the
    /// export after the switch-over, through the same ordering of requests. `None` for a
    /// local target (see [`target_handle`](Self::target_handle)).
    pub fn nbd_target(&self) -> Option<Arc<NbdTarget>> {
        match &self.shared.files.target {
            TargetSide::File(_) | TargetSide::Image(_) => None,
            TargetSide::Nbd(nbd) => Some(Arc::clone(nbd)),
        }
    }

    /// The qcow2 target, when the mirror writes to one: the mirror's own opening of it
    /// (imago's caches and, with `sync=none`, its reads from the source), so that a server
    /// keeps serving the disk from it after the switch-over. `None` for any other target.
    pub fn image_target(&self) -> Option<Arc<ImageTarget>> {
        match &self.shared.files.target {
            TargetSide::Image(image) => Some(Arc::clone(image)),
            TargetSide::File(_) | TargetSide::Nbd(_) => None,
        }
    }

    /// A new descriptor of the source's buffered handle (writable when guest writes are on),
    /// sharing its open file description and image lock like [`target_handle`](Self::target_handle).
    pub fn source_handle(&self) -> std::io::Result<std::fs::File> {
        self.shared.files.source.buffered.try_clone()
    }

    /// Warnings about image locks: one for each side whose filesystem does not support the
    /// locks (the mirror then runs without them, as QEMU does). Empty when both sides are
    /// locked or their locks were turned off.
    pub fn lock_warnings(&self) -> Vec<String> {
        let files = &self.shared.files;
        let target_lock = files.target.local_file().and_then(|side| side.lock.as_ref());
        files.source.lock.iter().chain(target_lock).filter_map(|l| l.warning()).collect()
    }
}
