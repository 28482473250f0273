//! Errors from bitmap operations: bad arguments from the caller, never broken invariants.

/// Errors from bitmap operations: bad arguments from the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BitmapError {
    /// The granularity must be below 64.
    #[error("granularity {0} is out of range (must be below 64)")]
    Granularity(u32),
    /// The bitmap would need more granules than supported.
    #[error("size {size} at granularity {granularity} needs more than 2^{max_log} granules")]
    TooLarge {
        /// Requested size in items.
        size: u64,
        /// Requested granularity.
        granularity: u32,
        /// log2 of the largest supported granule count.
        max_log: u32,
    },
    /// A range does not lie within `[0, size)`.
    #[error("range {start}+{count} lies outside the bitmap of size {size}")]
    OutOfRange {
        /// First item of the range.
        start: u64,
        /// Items in the range.
        count: u64,
        /// Bitmap size in items.
        size: u64,
    },
    /// `reset` needs a granule-aligned start and count (or a count that runs to the end).
    #[error("reset of {start}+{count} is not aligned to the granule size {granule}")]
    Unaligned {
        /// First item of the range.
        start: u64,
        /// Items in the range.
        count: u64,
        /// Items per granule.
        granule: u64,
    },
    /// Serialized data has the wrong length for the range.
    #[error("serialized data is {got} bytes, expected {expected}")]
    SerializedLength {
        /// Bytes given.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// Two bitmaps must have the same size to be merged.
    #[error("cannot merge a bitmap of size {other} into one of size {size}")]
    SizeMismatch {
        /// Size of the receiving bitmap.
        size: u64,
        /// Size of the other bitmap.
        other: u64,
    },
    /// The granularity is too large for serialization (must be below 58).
    #[error("granularity {0} is too large to serialize (must be below 58)")]
    NotSerializable(u32),
    /// A serialization chunk must start at a multiple of the serialization alignment and
    /// span a multiple of it, or run to the end.
    #[error("chunk {start}+{count} is not aligned to the serialization alignment {align}")]
    ChunkUnaligned {
        /// First item of the chunk.
        start: u64,
        /// Items in the chunk.
        count: u64,
        /// Required alignment in items (`64 << granularity`).
        align: u64,
    },
    /// The allocator refused the memory for the bitmap (about `size / 2^granularity / 8`
    /// bytes).
    #[error("cannot allocate {bytes} bytes for the bitmap")]
    OutOfMemory {
        /// Bytes asked for.
        bytes: u64,
    },
}
