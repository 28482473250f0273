//! Formatting a new qcow2 target (through imago): standalone, or naming a backing file
//! and its format in its header, as QEMU's `mode=absolute-paths` does.

use std::fs::File;
use std::path::Path;

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, StorageOpenOptions};

use super::{ImageError, ImageFormat};

/// The cluster size of a created target: QEMU's default, so a target allocates as the
/// images QEMU creates do.
pub const CLUSTER_SIZE: usize = 64 << 10;

/// Formats the empty file `file` (at `path`) as a qcow2 image of `size` virtual bytes,
/// with `backing` (an absolute path and its format) in its header when given. Nothing is
/// allocated: every range reads from the backing file (or as zero without one).
pub fn format_qcow2(
    path: &Path,
    file: File,
    size: u64,
    backing: Option<(&Path, ImageFormat)>,
) -> Result<(), ImageError> {
    let os = |source| ImageError::Os {
        path: path.to_owned(),
        source,
    };
    let opts = StorageOpenOptions::new().write(true).filename(path);
    let storage = ImagoFile::from_open_file(file, opts).map_err(os)?;
    let mut builder = Qcow2::<ImagoFile>::create_builder(storage)
        .size(size)
        .cluster_size(CLUSTER_SIZE);
    if let Some((backing, format)) = backing {
        let name = backing.to_str().ok_or_else(|| {
            ImageError::Unsupported(format!(
                "backing file name {} is not UTF-8",
                backing.display()
            ))
        })?;
        builder = builder.backing(name.to_owned(), format.name().to_owned());
    }
    builder.create().map_err(os)
}
