//! What each sync mode asks of the target's backing file, as QEMU's drive-mirror means it,
//! and the checks that refuse a wrong target before anything is written.
//!
//! - `full`: the target is standalone; a created one has no backing file.
//! - `top`: the target holds the source's top layer over the source's own backing file; a
//!   created one names that file (absolute path) and its format in its header, an
//!   existing one must already name the same file (same device and inode).
//! - `none`: the target holds only what the guest writes from now on, over the source
//!   itself; a created one names the source as its backing file, an existing one must.

use std::path::{Path, PathBuf};

use blockmirror_core::job::SyncMode;

use super::chain::{file_key, resolve_backing, Layer};
use super::{ImageError, ImageFormat};

/// Which file a sync mode puts under the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetBacking {
    /// None: the target stands alone (`full`).
    Standalone,
    /// The source's backing file, if it has one (`top`).
    SourceBacking,
    /// The source itself (`none`).
    Source,
}

impl TargetBacking {
    /// The backing a sync mode needs.
    pub fn for_sync(sync: SyncMode) -> Self {
        match sync {
            SyncMode::Full => TargetBacking::Standalone,
            SyncMode::Top => TargetBacking::SourceBacking,
            SyncMode::None => TargetBacking::Source,
            // A mode added later: as full (a standalone target), the safe reading.
            _ => TargetBacking::Standalone,
        }
    }

    /// The layer of the source's chain (top first) the target must have as its backing
    /// file, or `None` when it must have none.
    pub fn layer(self, source_layers: &[Layer]) -> Option<&Layer> {
        match self {
            TargetBacking::Standalone => None,
            TargetBacking::SourceBacking => source_layers.get(1),
            TargetBacking::Source => source_layers.first(),
        }
    }
}

/// The absolute form of a layer's path, as a created target's header names it.
pub fn absolute(path: &Path) -> Result<PathBuf, ImageError> {
    std::path::absolute(path).map_err(|source| ImageError::Os {
        path: path.to_owned(),
        source,
    })
}

/// Refuses a target that is one of the source chain's files (by device and inode).
pub fn refuse_target_in_chain(
    target: &Path,
    target_key: (u64, u64),
    source_layers: &[Layer],
) -> Result<(), ImageError> {
    match source_layers.iter().find(|layer| layer.key == target_key) {
        Some(layer) => Err(ImageError::TargetInChain {
            target: target.to_owned(),
            layer: layer.path.clone(),
        }),
        None => Ok(()),
    }
}

/// Checks that an existing qcow2 target's header names `needed` as its backing file (the
/// same file, whatever the spelling), or names none when `needed` is `None`.
pub fn check_existing_backing(
    target: &Path,
    target_top: &Layer,
    needed: Option<&Layer>,
    sync: SyncMode,
) -> Result<(), ImageError> {
    let expected = || needed.map_or_else(|| "none".to_owned(), |l| l.path.display().to_string());
    let wrong = |found: String| ImageError::WrongBacking {
        target: target.to_owned(),
        found,
        expected: expected(),
        sync: sync.as_str(),
    };
    match (&target_top.header_backing, needed) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(wrong("none".to_owned())),
        (Some(name), None) => Err(wrong(name.clone())),
        (Some(name), Some(layer)) => {
            let path = resolve_backing(target, name);
            let key = std::fs::File::open(&path).and_then(|f| file_key(&f));
            match key {
                Ok(key) if key == layer.key => Ok(()),
                _ => Err(wrong(name.clone())),
            }
        }
    }
}

/// Refuses a sync mode that needs a backing file under a target that cannot have one (a
/// raw target created here, when `needed` names a file).
pub fn refuse_raw_without_backing(
    target: &Path,
    format: ImageFormat,
    needed: Option<&Layer>,
    sync: SyncMode,
) -> Result<(), ImageError> {
    match (format, needed) {
        (ImageFormat::Raw, Some(layer)) => Err(ImageError::NeedsBackingTarget {
            target: target.to_owned(),
            format,
            needs: layer.path.clone(),
            sync: sync.as_str(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, key: (u64, u64)) -> Layer {
        Layer {
            path: PathBuf::from(name),
            format: ImageFormat::Qcow2,
            key,
            header_backing: None,
        }
    }

    #[test]
    fn each_sync_mode_names_its_backing_layer() {
        let layers = [layer("/top", (1, 1)), layer("/base", (1, 2))];
        assert_eq!(TargetBacking::for_sync(SyncMode::Full).layer(&layers), None);
        assert_eq!(
            TargetBacking::for_sync(SyncMode::Top).layer(&layers),
            Some(&layers[1])
        );
        assert_eq!(
            TargetBacking::for_sync(SyncMode::None).layer(&layers),
            Some(&layers[0])
        );
        assert_eq!(
            TargetBacking::for_sync(SyncMode::Top).layer(&layers[..1]),
            None
        );
    }

    #[test]
    fn a_target_among_the_layers_is_refused() {
        let layers = [layer("/top", (1, 1)), layer("/base", (1, 2))];
        assert!(matches!(
            refuse_target_in_chain(Path::new("/t"), (1, 2), &layers),
            Err(ImageError::TargetInChain { layer, .. }) if layer == Path::new("/base")
        ));
        assert!(refuse_target_in_chain(Path::new("/t"), (1, 3), &layers).is_ok());
    }

    #[test]
    fn backing_names_resolve_against_the_naming_image() {
        use super::super::chain::resolve_backing;
        assert_eq!(
            resolve_backing(Path::new("/a/b/top.qcow2"), "base.qcow2"),
            Path::new("/a/b/base.qcow2")
        );
        assert_eq!(
            resolve_backing(Path::new("/a/b/top.qcow2"), "/c/base"),
            Path::new("/c/base")
        );
        assert_eq!(
            resolve_backing(Path::new("top.qcow2"), "../base"),
            Path::new("../base")
        );
    }

    #[test]
    fn a_missing_or_extra_backing_is_wrong() {
        let mut top = layer("/t", (9, 9));
        let needed = layer("/base", (1, 2));
        assert!(matches!(
            check_existing_backing(Path::new("/t"), &top, Some(&needed), SyncMode::Top),
            Err(ImageError::WrongBacking { .. })
        ));
        assert!(check_existing_backing(Path::new("/t"), &top, None, SyncMode::Top).is_ok());
        top.header_backing = Some("/nonexistent-backing".into());
        assert!(matches!(
            check_existing_backing(Path::new("/t"), &top, None, SyncMode::Top),
            Err(ImageError::WrongBacking { .. })
        ));
        assert!(matches!(
            check_existing_backing(Path::new("/t"), &top, Some(&needed), SyncMode::None),
            Err(ImageError::WrongBacking { .. })
        ));
    }
}
