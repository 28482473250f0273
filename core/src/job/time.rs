//! Time as the core sees it: a number the driver supplies, never a clock it reads.

/// A point in time in nanoseconds, supplied by the driver (no clock in the core; a newtype
/// because `std::time::Instant` does not exist on wasm32). Only differences matter: the
/// driver picks the origin (a simulation starts at 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);
