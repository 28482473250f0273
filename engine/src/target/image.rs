//! [`ImageTarget`]: a qcow2 target, written through imago.
//!
//! Writes allocate clusters in the target's top layer; zero ranges become zero clusters
//! (imago's `write_zeroes`: no data written, whatever `unmap` says; a discard is never
//! taken to read zero). Flushes write imago's metadata and sync the file.
//!
//! With `sync=none` the target's backing file is the source itself, which the mirror keeps
//! writing until the switch-over. imago would read it through a second, read-only opening
//! whose cached metadata goes stale as the source changes, so that opening is not made:
//! the target is opened without its backing file and the engine reads what the target
//! does not hold from the live source ([`Below`]). A write that covers a cluster only in
//! part would make imago fill the rest with zeroes (it sees no backing file); so before
//! such a write the ranges around it that the target does not hold, up to the target's
//! cluster boundaries (read from its header: imago does not tell; the largest qcow2
//! cluster, 2 MiB, when unknown), are written from the source first. Those writes and the write itself hold one lock, so
//! two writes into one cluster cannot interleave.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use imago::ShallowMapping;

use crate::files::Side;
use crate::image::Chain;
use crate::io_ops;

/// The largest qcow2 cluster: edges are filled up to multiples of it when the target's
/// cluster size is unknown.
const FILL_ALIGN: u64 = 2 << 20;

/// Where the ranges a `sync=none` target does not hold are read from: the live source.
#[derive(Debug, Clone)]
pub enum Below {
    /// A raw source (its buffered handle).
    Raw(Arc<File>),
    /// A qcow2 source (the mirror's own opening of it).
    Image(Arc<Chain>),
}

impl Below {
    fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Below::Raw(file) => io_ops::read_exact(file, buf, offset),
            Below::Image(chain) => chain.read(buf, offset),
        }
    }
}

/// A qcow2 target of a running mirror.
#[derive(Debug)]
pub struct ImageTarget {
    /// The target file's own handles (its image lock lives on `buffered`).
    pub side: Side,
    chain: Chain,
    below: Option<Below>,
    fill_lock: Mutex<()>,
}

impl ImageTarget {
    /// A target over `chain` (opened on a descriptor of `side`), reading what it lacks
    /// from `below` when given (see the module's note on `sync=none`).
    pub fn new(side: Side, chain: Chain, below: Option<Below>) -> Self {
        ImageTarget {
            side,
            chain,
            below,
            fill_lock: Mutex::new(()),
        }
    }

    /// The target's chain.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// The ranges inside `range` that the target's top layer does not hold.
    fn unheld(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        let mut out = Vec::new();
        let mut pos = range.start;
        while pos < range.end {
            let (mapping, length) = self
                .chain
                .access()
                .get_shallow_mapping(pos, range.end - pos)?;
            let length = length.clamp(1, range.end - pos);
            match mapping {
                ShallowMapping::Eof { .. } => break,
                ShallowMapping::Indirect { .. }
                | ShallowMapping::Zero {
                    explicit: false, ..
                } => out.push(pos..pos + length),
                _ => {}
            }
            pos += length;
        }
        Ok(out)
    }

    /// Copies from `below` the ranges around `[offset, offset+length)`, up to cluster
    /// boundaries, that the target does not hold. Both edges are looked up before either
    /// is written: writing the head allocates its cluster (imago fills the rest of it with
    /// zeroes), after which the tail would look held.
    fn fill_edges(&self, below: &Below, offset: u64, length: u64) -> io::Result<()> {
        let size = self.chain.size();
        let align = self.chain.cluster_size().unwrap_or(FILL_ALIGN);
        let end = offset + length;
        let start = offset / align * align;
        let stop = end.div_ceil(align).saturating_mul(align).min(size);
        let mut holes = self.unheld(start..offset)?;
        holes.extend(self.unheld(end..stop)?);
        let mut buf = Vec::new();
        for hole in holes {
            buf.resize((hole.end - hole.start) as usize, 0);
            below.read(&mut buf, hole.start)?;
            self.chain.write(&buf, hole.start)?;
        }
        Ok(())
    }

    /// Writes a copy range, then starts the writeback of where it landed in the file (as
    /// the raw copy path does): the flush before READY then has little left to write.
    pub fn write_copy(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write(data, offset)?;
        let length = data.len() as u64;
        if let Ok((imago::Mapping::Raw { offset: host, .. }, mapped)) =
            self.chain.access().get_mapping(offset, length)
        {
            io_ops::start_writeback(&self.side.copy, host, mapped);
        }
        Ok(())
    }

    /// Writes `data` at `offset`.
    pub fn write(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match &self.below {
            None => self.chain.write(data, offset),
            Some(below) => {
                let _one = self
                    .fill_lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                self.fill_edges(below, offset, data.len() as u64)?;
                self.chain.write(data, offset)
            }
        }
    }

    /// Makes the range read as zeroes (zero clusters where whole clusters are covered).
    pub fn write_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        match &self.below {
            None => self.chain.write_zeroes(offset, length),
            Some(below) => {
                let _one = self
                    .fill_lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                self.fill_edges(below, offset, length)?;
                self.chain.write_zeroes(offset, length)
            }
        }
    }

    /// Reads the target's view: its own clusters, and for the rest its backing chain (or
    /// the live source, see the module's note).
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let Some(below) = &self.below else {
            return self.chain.read(buf, offset);
        };
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        for hole in self.unheld(offset..end)? {
            if hole.start > pos {
                self.chain.read(
                    &mut buf[(pos - offset) as usize..(hole.start - offset) as usize],
                    pos,
                )?;
            }
            below.read(
                &mut buf[(hole.start - offset) as usize..(hole.end - offset) as usize],
                hole.start,
            )?;
            pos = hole.end;
        }
        if pos < end {
            self.chain.read(&mut buf[(pos - offset) as usize..], pos)?;
        }
        Ok(())
    }

    /// Writes imago's metadata out and syncs the file.
    pub fn flush(&self) -> io::Result<()> {
        self.chain.flush()
    }
}
