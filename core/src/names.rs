//! The name tables: every enum the faces show as a string gets its names from one
//! [`names!`] table here, so Python, the browser and the CLI read the same words.
//!
//! A table gives a fieldless enum `ALL` (every value, in table order), `NAMES`, `as_str` (the shared
//! name), `from_name`, `Display` (the name) and `FromStr` (the name back, or the table's
//! error type's `UnknownName`). Human messages, where a value has one (an I/O error's
//! "No space left on device"), are a separate method next to the enum, never the name.

/// Implements the shared names of a fieldless enum from one `Variant = "name"` table.
///
/// `names!(Type, "what it is", ErrorType, Variant = "name", ...)`: `ErrorType` must have an
/// `UnknownName { what: &'static str, name: String }` variant, which `FromStr` returns.
macro_rules! names {
    ($ty:ident, $what:literal, $err:ident, $($variant:ident = $name:literal),+ $(,)?) => {
        impl $ty {
            /// Every value, in the order of the name table.
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];

            /// Every shared name, in the order of [`ALL`](Self::ALL).
            pub const NAMES: [&'static str; [$($name),+].len()] = [$($name),+];

            /// The shared name (what Python, the browser and the CLI show and accept).
            pub const fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }

            /// The value with this shared name, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> Result<Self, $err> {
                Self::from_name(s).ok_or_else(|| $err::UnknownName { what: $what, name: s.to_owned() })
            }
        }
    };
}

pub(crate) use names;

#[cfg(test)]
mod tests {
    use crate::job::*;
    use crate::sim::{ChunkState, ReadCapture, RunOutcome, Side};

    macro_rules! round_trip {
        ($($ty:ty),+) => {$(
            for value in <$ty>::ALL {
                assert_eq!(value.as_str().parse::<$ty>().ok(), Some(value), "{value:?}");
                assert_eq!(value.to_string(), value.as_str());
            }
            assert!("no such name".parse::<$ty>().is_err());
        )+};
    }

    #[test]
    fn every_table_reads_back_what_it_writes() {
        round_trip!(
            SyncMode,
            CopyMode,
            ErrorPolicy,
            RangeState,
            JobStatus,
            Verb,
            ActionKind
        );
        round_trip!(
            OpViewKind,
            Operation,
            ErrorAction,
            EventType,
            ChunkState,
            RunOutcome,
            ReadCapture,
            Side
        );
    }

    #[test]
    fn chunk_state_bytes_index_the_table() {
        for (index, state) in ChunkState::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(state as u8), index, "{state:?}");
            assert_eq!(ChunkState::from_byte(state as u8), Some(state));
        }
        assert_eq!(ChunkState::from_byte(ChunkState::ALL.len() as u8), None);
    }

    #[test]
    fn io_error_kinds_have_names_and_separate_messages() {
        for (kind, name, errno) in [
            (IoErrorKind::NoSpace, "nospace", 28),
            (IoErrorKind::Io, "io", 5),
            (IoErrorKind::ReadOnly, "readonly", 30),
            (IoErrorKind::Other(22), "22", 22),
        ] {
            assert_eq!(kind.name(), name);
            assert_eq!(name.parse::<IoErrorKind>(), Ok(kind));
            assert_eq!(kind.errno(), errno);
            assert_ne!(kind.message(), name);
        }
        assert_eq!(
            "28".parse::<IoErrorKind>(),
            Ok(IoErrorKind::NoSpace),
            "an errno with a name"
        );
        assert_eq!(IoErrorKind::NoSpace.to_string(), "No space left on device");
        for bad in ["", "0", "-5", "nope", "No space left on device"] {
            assert!(bad.parse::<IoErrorKind>().is_err(), "{bad:?}");
        }
    }
}
