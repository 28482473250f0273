//! Sockets for NBD: a stream over a Unix or TCP socket ([`Stream`], [`connect`]) and the
//! blocking, thread-safe client built on the sans-io [`crate::nbd::ClientSession`]
//! ([`NbdClient`]).
//!
//! Submodules:
//! - [`stream`]: [`Stream`], [`connect`] and [`connect_timeout`].
//! - [`nbd_client`]: [`NbdClient`], its time limits ([`ClientConfig`]) and [`NbdClientError`].

pub mod nbd_client;
pub mod stream;

pub use nbd_client::{ClientConfig, NbdClient, NbdClientError};
pub use stream::{connect, connect_timeout, Stream};
