//! What an export is, as both sides of the handshake describe it: its size, what it
//! supports (the transmission flags) and its size constraints (`NBD_INFO_BLOCK_SIZE`).

use super::wire::*;

/// Size constraints: the alignment every request keeps (`minimum`), the size that avoids
/// read-modify-write (`preferred`) and the largest read or write payload (`maximum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// Smallest addressable unit; offsets and lengths are multiples of it. A power of two.
    pub minimum: u32,
    /// The efficient I/O size. A power of two, at least `minimum` and 512.
    pub preferred: u32,
    /// The largest payload of one read or write; at least `preferred`.
    pub maximum: u32,
}

impl Default for BlockSize {
    /// The protocol's defaults when nothing was advertised: 1, 4096 and 32 MiB.
    fn default() -> Self {
        Self {
            minimum: 1,
            preferred: 4096,
            maximum: 32 << 20,
        }
    }
}

impl BlockSize {
    /// Whether the three values obey the protocol's rules (powers of two, minimum at most
    /// 64 KiB, preferred at least 512 and `minimum`, maximum at least `preferred`).
    pub fn is_valid(&self) -> bool {
        self.minimum.is_power_of_two()
            && self.minimum <= 1 << 16
            && self.preferred.is_power_of_two()
            && self.preferred >= self.minimum.max(512)
            && self.maximum >= self.preferred
    }
}

/// One export: what a server offers and what a client learns in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// The name clients ask for (may be empty: the default export).
    pub name: String,
    /// A human-readable description (empty: none).
    pub description: String,
    /// Bytes.
    pub size: u64,
    /// Writes, trims and zeroes are refused.
    pub read_only: bool,
    /// `NBD_CMD_FLUSH` is supported.
    pub can_flush: bool,
    /// `NBD_CMD_FLAG_FUA` is supported.
    pub can_fua: bool,
    /// `NBD_CMD_TRIM` is supported.
    pub can_trim: bool,
    /// `NBD_CMD_WRITE_ZEROES` (and its `NO_HOLE` flag) is supported.
    pub can_write_zeroes: bool,
    /// `NBD_CMD_FLAG_FAST_ZERO` is supported (only with `can_write_zeroes`).
    pub can_fast_zero: bool,
    /// Several connections see one another's flushed writes.
    pub can_multi_conn: bool,
    /// Size constraints.
    pub block_size: BlockSize,
}

impl ExportInfo {
    /// A writable export of `size` bytes that supports every command, with default block
    /// sizes.
    pub fn new(name: impl Into<String>, size: u64) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            size,
            read_only: false,
            can_flush: true,
            can_fua: true,
            can_trim: true,
            can_write_zeroes: true,
            can_fast_zero: true,
            can_multi_conn: false,
            block_size: BlockSize::default(),
        }
    }

    /// The transmission flags that describe this export. `NBD_FLAG_SEND_DF` is never set
    /// (reads may be split into several chunks); fast zero only with write zeroes.
    pub fn transmission_flags(&self) -> u16 {
        let mut flags = FLAG_HAS_FLAGS;
        for (on, flag) in [
            (self.read_only, FLAG_READ_ONLY),
            (self.can_flush, FLAG_SEND_FLUSH),
            (self.can_fua, FLAG_SEND_FUA),
            (self.can_trim, FLAG_SEND_TRIM),
            (self.can_write_zeroes, FLAG_SEND_WRITE_ZEROES),
            (
                self.can_write_zeroes && self.can_fast_zero,
                FLAG_SEND_FAST_ZERO,
            ),
            (self.can_multi_conn, FLAG_CAN_MULTI_CONN),
        ] {
            if on {
                flags |= flag;
            }
        }
        flags
    }

    /// An export as a client learns it: the name it asked for, a size and transmission
    /// flags (unknown flags ignored), default block sizes until told otherwise.
    pub fn from_flags(name: impl Into<String>, size: u64, flags: u16) -> Self {
        let can_write_zeroes = flags & FLAG_SEND_WRITE_ZEROES != 0;
        Self {
            name: name.into(),
            description: String::new(),
            size,
            read_only: flags & FLAG_READ_ONLY != 0,
            can_flush: flags & FLAG_SEND_FLUSH != 0,
            can_fua: flags & FLAG_SEND_FUA != 0,
            can_trim: flags & FLAG_SEND_TRIM != 0,
            can_write_zeroes,
            can_fast_zero: can_write_zeroes && flags & FLAG_SEND_FAST_ZERO != 0,
            can_multi_conn: flags & FLAG_CAN_MULTI_CONN != 0,
            block_size: BlockSize::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip() {
        let mut export = ExportInfo::new("disk", 1 << 20);
        export.read_only = true;
        export.can_trim = false;
        export.can_multi_conn = true;
        let flags = export.transmission_flags();
        assert_eq!(flags & FLAG_SEND_DF, 0);
        assert_eq!(ExportInfo::from_flags("disk", 1 << 20, flags), export);
    }

    #[test]
    fn fast_zero_needs_write_zeroes() {
        let mut export = ExportInfo::new("", 0);
        export.can_write_zeroes = false;
        assert_eq!(export.transmission_flags() & FLAG_SEND_FAST_ZERO, 0);
        assert!(!ExportInfo::from_flags("", 0, FLAG_HAS_FLAGS | FLAG_SEND_FAST_ZERO).can_fast_zero);
    }

    #[test]
    fn block_size_rules() {
        assert!(BlockSize::default().is_valid());
        assert!(!BlockSize {
            minimum: 3,
            preferred: 4096,
            maximum: 1 << 20
        }
        .is_valid());
        assert!(!BlockSize {
            minimum: 512,
            preferred: 256,
            maximum: 1 << 20
        }
        .is_valid());
        assert!(!BlockSize {
            minimum: 512,
            preferred: 4096,
            maximum: 1024
        }
        .is_valid());
    }
}
