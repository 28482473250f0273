//! [`ImageFormat`] and the format probe.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::ImageError;

/// The first four bytes of every qcow2 image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// A disk image format the mirror reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// The bytes are the disk.
    Raw,
    /// QEMU's copy-on-write format (clusters, optional backing file).
    Qcow2,
}

impl ImageFormat {
    /// The name QEMU uses ("raw", "qcow2").
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }

    /// Parses a format name as QEMU spells it.
    pub fn parse(name: &str) -> Result<Self, ImageError> {
        match name {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            other => Err(ImageError::UnknownFormat(other.to_owned())),
        }
    }

    /// The format `file`'s contents say: qcow2 when it starts with the qcow2 magic, raw
    /// otherwise (a file shorter than the magic is raw too).
    pub fn probe(file: &File) -> io::Result<Self> {
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < magic.len() {
            match file.read_at(&mut magic[got..], got as u64) {
                Ok(0) => return Ok(ImageFormat::Raw),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(if magic == QCOW2_MAGIC {
            ImageFormat::Qcow2
        } else {
            ImageFormat::Raw
        })
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for format in [ImageFormat::Raw, ImageFormat::Qcow2] {
            assert_eq!(ImageFormat::parse(format.name()).unwrap(), format);
        }
        assert!(
            matches!(ImageFormat::parse("vmdk"), Err(ImageError::UnknownFormat(name)) if name == "vmdk")
        );
    }

    #[test]
    fn the_probe_reads_the_magic_and_calls_short_files_raw() {
        let dir = std::env::temp_dir().join(format!("bm-image-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        for (bytes, expected) in [
            (&b"QFI\xfb\0\0\0\x03"[..], ImageFormat::Qcow2),
            (&b"QFI"[..], ImageFormat::Raw),
            (&b""[..], ImageFormat::Raw),
            (&b"QFI\xfa...."[..], ImageFormat::Raw),
        ] {
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(
                ImageFormat::probe(&File::open(&path).unwrap()).unwrap(),
                expected
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
