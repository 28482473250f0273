//! The on-disk form of one slot of a bitmap file: a header that names what the bitmap is
//! about, then the serialized dirty bitmap. Pure functions over bytes, so every refusal is
//! testable without files.
//!
//! Layout (little-endian), at the start of the slot:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `BMBITMAP` |
//! | 8..12 | version (1) |
//! | 12..16 | header length in bytes, `H` (this table, the URIs and the checksum) |
//! | 16..24 | generation: 1 for the first write, one more for each write after |
//! | 24..32 | disk length in bytes |
//! | 32..40 | granularity in bytes (a power of two) |
//! | 40..64 | source identity: kind (u64: 1 inode, 2 block device, 3 NBD), two u64 |
//! | 64..88 | target identity, the same way |
//! | 88..92, 92..96 | byte lengths of the source's and the target's URI (NBD only; else 0) |
//! | 96..  | the URIs' bytes, source's first |
//! | H-24..H-16 | body length in bytes |
//! | H-16..H-8 | XXH3-64 of the body |
//! | H-8..H | XXH3-64 of the header bytes before it |
//!
//! The body follows at `H`: the bitmap's bottom level as serialized by
//! [`HBitmap::serialize`] over the whole disk (bit `k` set: chunk `k` may differ between
//! source and target). Both checksums must match before anything of a slot is believed: a
//! slot torn by a crash in mid-write fails one of them.

use blockmirror_core::bitmap::HBitmap;
use xxhash_rust::xxh3::xxh3_64;

use super::PersistError;

/// The first bytes of every slot.
pub const MAGIC: [u8; 8] = *b"BMBITMAP";

/// The layout version this code writes and reads.
pub const VERSION: u32 = 1;

/// Bytes of the fixed part of the header (before the URIs).
const FIXED_HEADER: usize = 96;

/// Bytes of the header's tail (body length and both checksums).
const HEADER_TAIL: usize = 24;

/// The longest URI a header holds (an NBD URI is far shorter in practice).
pub const MAX_URI_BYTES: usize = 4096;

/// What one side of the mirror is, as far as a bitmap can tell it apart from another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SideIdentity {
    /// A regular file: the filesystem's device number and the inode number.
    Inode {
        /// `st_dev`.
        dev: u64,
        /// `st_ino`.
        ino: u64,
    },
    /// A block device by its device number.
    BlockDevice {
        /// `st_rdev`.
        rdev: u64,
    },
    /// An NBD export by its URI.
    Nbd {
        /// The URI as given.
        uri: String,
    },
}

impl std::fmt::Display for SideIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SideIdentity::Inode { dev, ino } => write!(f, "inode {ino} on device {dev:#x}"),
            SideIdentity::BlockDevice { rdev } => write!(f, "block device {rdev:#x}"),
            SideIdentity::Nbd { uri } => write!(f, "NBD export {uri}"),
        }
    }
}

impl SideIdentity {
    fn encode(&self) -> (u64, u64, u64, &[u8]) {
        match self {
            SideIdentity::Inode { dev, ino } => (1, *dev, *ino, &[]),
            SideIdentity::BlockDevice { rdev } => (2, *rdev, 0, &[]),
            SideIdentity::Nbd { uri } => (3, 0, 0, uri.as_bytes()),
        }
    }

    fn decode(kind: u64, a: u64, b: u64, uri: &[u8]) -> Result<Self, PersistError> {
        match kind {
            1 => Ok(SideIdentity::Inode { dev: a, ino: b }),
            2 => Ok(SideIdentity::BlockDevice { rdev: a }),
            3 => String::from_utf8(uri.to_vec())
                .map(|uri| SideIdentity::Nbd { uri })
                .map_err(|_| PersistError::Malformed("an NBD URI that is not UTF-8")),
            _ => Err(PersistError::Malformed("an unknown kind of side")),
        }
    }
}

/// Everything a bitmap must agree with before it may steer a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapIdentity {
    /// Disk length in bytes.
    pub length: u64,
    /// Bytes per bit (a power of two).
    pub granularity: u64,
    /// The image copied from.
    pub source: SideIdentity,
    /// The image copied to.
    pub target: SideIdentity,
}

impl BitmapIdentity {
    /// A clean bitmap of this identity's shape.
    pub fn new_bitmap(&self) -> Result<HBitmap, PersistError> {
        if !self.granularity.is_power_of_two() {
            return Err(PersistError::Malformed("a granularity that is not a power of two"));
        }
        HBitmap::new(self.length, self.granularity.trailing_zeros())
            .map_err(|_| PersistError::Malformed("a bitmap too large for its disk length"))
    }

    /// Bytes of a header for this identity.
    pub fn header_len(&self) -> usize {
        let uri_len = |side: &SideIdentity| side.encode().3.len();
        FIXED_HEADER + uri_len(&self.source) + uri_len(&self.target) + HEADER_TAIL
    }
}

/// A slot read back: its generation, identity and bitmap (checksums verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedSlot {
    /// The generation it was written with.
    pub generation: u64,
    /// What it is about.
    pub identity: BitmapIdentity,
    /// The dirty chunks.
    pub bitmap: HBitmap,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The bytes of a slot (header and body) holding `bitmap` at `generation`.
pub fn encode(identity: &BitmapIdentity, generation: u64, bitmap: &HBitmap) -> Vec<u8> {
    let body = bitmap.serialize(0, bitmap.size()).expect("the whole bitmap is one aligned chunk");
    let (sk, sa, sb, suri) = identity.source.encode();
    let (tk, ta, tb, turi) = identity.target.encode();
    let header_len = identity.header_len();
    let mut out = Vec::with_capacity(header_len + body.len());
    out.extend_from_slice(&MAGIC);
    put_u32(&mut out, VERSION);
    put_u32(&mut out, header_len as u32);
    put_u64(&mut out, generation);
    put_u64(&mut out, identity.length);
    put_u64(&mut out, identity.granularity);
    for v in [sk, sa, sb, tk, ta, tb] {
        put_u64(&mut out, v);
    }
    put_u32(&mut out, suri.len() as u32);
    put_u32(&mut out, turi.len() as u32);
    out.extend_from_slice(suri);
    out.extend_from_slice(turi);
    put_u64(&mut out, body.len() as u64);
    put_u64(&mut out, xxh3_64(&body));
    let header_sum = xxh3_64(&out);
    put_u64(&mut out, header_sum);
    debug_assert_eq!(out.len(), header_len);
    out.extend_from_slice(&body);
    out
}

/// Reads the header's length from the first bytes of a slot (for sizing the read of the
/// whole slot), refusing a slot that is not one of ours before trusting any length in it.
pub fn peek_header_len(bytes: &[u8]) -> Result<usize, PersistError> {
    if bytes.len() < FIXED_HEADER {
        return Err(PersistError::Truncated { needed: FIXED_HEADER as u64, found: bytes.len() as u64 });
    }
    if bytes[..8] != MAGIC {
        return Err(PersistError::BadMagic);
    }
    let version = get_u32(bytes, 8);
    if version != VERSION {
        return Err(PersistError::UnsupportedVersion { found: version, supported: VERSION });
    }
    let header_len = get_u32(bytes, 12) as usize;
    if !(FIXED_HEADER + HEADER_TAIL..=FIXED_HEADER + HEADER_TAIL + 2 * MAX_URI_BYTES).contains(&header_len) {
        return Err(PersistError::Malformed("a header length out of range"));
    }
    Ok(header_len)
}

/// A slot's header, checked (magic, version, checksum) but not yet compared with anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotHeader {
    /// Bytes of the header (the body follows).
    pub header_len: usize,
    /// The generation it was written with.
    pub generation: u64,
    /// What the bitmap is about.
    pub identity: BitmapIdentity,
    /// Bytes of the body.
    pub body_len: u64,
    /// XXH3-64 of the body.
    body_sum: u64,
}

/// The longest header there can be: read this much to decode any header.
pub const MAX_HEADER_BYTES: usize = FIXED_HEADER + 2 * MAX_URI_BYTES + HEADER_TAIL;

/// Decodes a slot's header from its first bytes: magic, version, header checksum, in that
/// order, each refusal its own error. Never trusts a length it has not checked.
pub fn decode_header(bytes: &[u8]) -> Result<SlotHeader, PersistError> {
    let header_len = peek_header_len(bytes)?;
    if bytes.len() < header_len {
        return Err(PersistError::Truncated { needed: header_len as u64, found: bytes.len() as u64 });
    }
    let header = &bytes[..header_len];
    if xxh3_64(&header[..header_len - 8]) != get_u64(header, header_len - 8) {
        return Err(PersistError::HeaderChecksum);
    }
    let (suri_len, turi_len) = (get_u32(header, 88) as usize, get_u32(header, 92) as usize);
    if FIXED_HEADER + suri_len + turi_len + HEADER_TAIL != header_len {
        return Err(PersistError::Malformed("URI lengths that do not fit the header"));
    }
    let suri = &header[FIXED_HEADER..FIXED_HEADER + suri_len];
    let turi = &header[FIXED_HEADER + suri_len..FIXED_HEADER + suri_len + turi_len];
    let identity = BitmapIdentity {
        length: get_u64(header, 24),
        granularity: get_u64(header, 32),
        source: SideIdentity::decode(get_u64(header, 40), get_u64(header, 48), get_u64(header, 56), suri)?,
        target: SideIdentity::decode(get_u64(header, 64), get_u64(header, 72), get_u64(header, 80), turi)?,
    };
    Ok(SlotHeader {
        header_len,
        generation: get_u64(header, 16),
        identity,
        body_len: get_u64(header, header_len - 24),
        body_sum: get_u64(header, header_len - 16),
    })
}

/// Decodes the body that follows `header` (whose identity the caller has accepted, so the
/// bitmap's size is bounded by what the caller expects): length, then checksum.
pub fn decode_body(header: &SlotHeader, body: &[u8]) -> Result<HBitmap, PersistError> {
    let mut bitmap = header.identity.new_bitmap()?;
    let expected_len = bitmap.serialization_size(0, bitmap.size()).expect("whole bitmap");
    if header.body_len != expected_len {
        return Err(PersistError::Malformed("a body length that does not fit the disk length and granularity"));
    }
    if (body.len() as u64) < expected_len {
        return Err(PersistError::Truncated {
            needed: header.header_len as u64 + expected_len,
            found: (header.header_len + body.len()) as u64,
        });
    }
    let body = &body[..expected_len as usize];
    if xxh3_64(body) != header.body_sum {
        return Err(PersistError::BodyChecksum);
    }
    bitmap.deserialize_part(0, bitmap.size(), body, true).expect("length checked above");
    Ok(bitmap)
}

/// Decodes a whole slot held in memory (header, then body).
#[cfg(test)]
pub fn decode(bytes: &[u8]) -> Result<DecodedSlot, PersistError> {
    let header = decode_header(bytes)?;
    let bitmap = decode_body(&header, &bytes[header.header_len..])?;
    Ok(DecodedSlot { generation: header.generation, identity: header.identity, bitmap })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn identity(length: u64, granularity: u64) -> BitmapIdentity {
        BitmapIdentity {
            length,
            granularity,
            source: SideIdentity::Inode { dev: 7, ino: 42 },
            target: SideIdentity::Nbd { uri: "nbd+unix:///disk?socket=/tmp/s".into() },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever the bitmap, a slot decodes to exactly what was encoded.
        #[test]
        fn a_slot_round_trips(chunks in 1u64..5000, set in proptest::collection::vec(0u64..5000, 0..50), generation: u64) {
            let id = identity(chunks * 4096 - 100, 4096);
            let mut bitmap = id.new_bitmap().unwrap();
            for c in set.into_iter().filter(|c| *c < chunks) {
                bitmap.set(c * 4096, 1).unwrap();
            }
            let slot = decode(&encode(&id, generation, &bitmap)).unwrap();
            prop_assert_eq!(slot.generation, generation);
            prop_assert_eq!(slot.identity, id);
            prop_assert_eq!(slot.bitmap, bitmap);
        }

        /// Any single flipped bit anywhere in a slot is refused, never decoded into
        /// something else (the checksums cover every byte).
        #[test]
        fn any_flipped_bit_is_refused(chunks in 1u64..300, bit in 0usize..1 << 20) {
            let id = identity(chunks * 65536, 65536);
            let mut bitmap = id.new_bitmap().unwrap();
            bitmap.set(0, 65536).unwrap();
            let mut bytes = encode(&id, 3, &bitmap);
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&bytes).is_err());
        }

        /// Every prefix of a slot (a write cut short) is refused.
        #[test]
        fn every_prefix_is_refused(cut in 0usize..4000) {
            let id = identity(1 << 30, 65536);
            let bytes = encode(&id, 1, &id.new_bitmap().unwrap());
            let cut = cut % bytes.len();
            prop_assert!(decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn each_kind_of_damage_has_its_own_error() {
        let id = identity(1 << 20, 4096);
        let bytes = encode(&id, 1, &id.new_bitmap().unwrap());
        let header_len = id.header_len();
        let flipped = |at: usize| {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            decode(&b).unwrap_err()
        };
        assert!(matches!(flipped(0), PersistError::BadMagic));
        assert!(matches!(flipped(8), PersistError::UnsupportedVersion { found: 17, supported: 1 }));
        assert!(matches!(flipped(20), PersistError::HeaderChecksum));
        assert!(matches!(flipped(header_len + 3), PersistError::BodyChecksum));
        assert!(matches!(decode(&bytes[..50]), Err(PersistError::Truncated { needed: 96, found: 50 })));
        assert!(matches!(decode(&bytes[..header_len + 1]), Err(PersistError::Truncated { .. })));
    }
}
