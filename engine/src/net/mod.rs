//! Sockets for NBD: a stream over a Unix or TCP socket ([`Stream`], [`connect`]) and the
//! blocking, thread-safe client built on the sans-io [`crate::nbd::ClientSession`]
//! ([`NbdClient`]).
//!
//! Submodules:
//! - [`stream`]: [`Stream`] and [`connect`].
//! - [`nbd_client`]: [`NbdClient`] and [`NbdClientError`].

pub mod nbd_client;
pub mod stream;

pub use nbd_client::{NbdClient, NbdClientError};
pub use stream::{connect, Stream};
