//! `Stream`: one connected socket, Unix or TCP, used the same way.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::nbd::NbdAddress;

/// A connected Unix or TCP socket.
#[derive(Debug)]
pub enum Stream {
    /// A Unix domain socket.
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
}

/// Connects to `address`, waiting as long as the OS does. TCP connections get
/// `TCP_NODELAY`: NBD requests are small messages that must not wait for Nagle's algorithm.
pub fn connect(address: &NbdAddress) -> io::Result<Stream> {
    match address {
        NbdAddress::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        NbdAddress::Tcp { host, port } => {
            let stream = TcpStream::connect((host.as_str(), *port))?;
            stream.set_nodelay(true)?;
            Ok(Stream::Tcp(stream))
        }
    }
}

/// [`connect`], failing with `TimedOut` once `timeout` has passed without a connection.
///
/// TCP: each address the host name resolves to is tried in turn within what is left of
/// `timeout` (the name lookup itself is bounded only by the resolver's own timeouts). A
/// peer that drops SYNs would otherwise hold the caller for the kernel's SYN retries, some
/// two minutes.
///
/// Unix: a connect blocks only while the listener's backlog is full (a server that stopped
/// accepting). std offers no timed Unix connect, so the connect runs on a helper thread and
/// the caller waits for it at most `timeout`; an abandoned attempt's thread ends when the
/// kernel ends its connect (its socket, if it connects late, is closed unused).
pub fn connect_timeout(address: &NbdAddress, timeout: Duration) -> io::Result<Stream> {
    match address {
        NbdAddress::Unix(path) => connect_unix_timeout(path, timeout).map(Stream::Unix),
        NbdAddress::Tcp { host, port } => {
            let stream = connect_tcp_timeout(host, *port, timeout)?;
            stream.set_nodelay(true)?;
            Ok(Stream::Tcp(stream))
        }
    }
}

fn timed_out(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

fn connect_tcp_timeout(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    // No deadline when `timeout` reaches past what `Instant` holds: each try gets it whole.
    let deadline = Instant::now().checked_add(timeout);
    let mut last_error = None;
    for address in (host, port).to_socket_addrs()? {
        let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&address, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| timed_out(format!("no connection to {host}:{port} within {timeout:?}"))))
}

fn connect_unix_timeout(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    let owned = path.to_owned();
    std::thread::Builder::new()
        .name("nbd-connect".into())
        .spawn(move || {
            let _ = sender.send(UnixStream::connect(owned));
        })?;
    match receiver.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(timed_out(format!(
            "no connection to {} within {timeout:?} (its listener accepts nothing)",
            path.display()
        ))),
    }
}

impl Stream {
    /// Another handle on the same socket (for a reader thread beside a writer).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Shuts down reading, writing or both, for every handle on the socket.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    /// `TCP_NODELAY` on a TCP stream; a no-op on a Unix socket.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match self {
            Stream::Unix(_) => Ok(()),
            Stream::Tcp(s) => s.set_nodelay(nodelay),
        }
    }

    /// A timeout for blocking reads (`None`: wait forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tcp(s) => s.set_read_timeout(timeout),
        }
    }

    /// A timeout for blocking writes (`None`: wait forever). A write that moves no byte for
    /// this long fails with `WouldBlock`; one that moves some returns the count.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(timeout),
            Stream::Tcp(s) => s.set_write_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_and_tcp_streams_carry_bytes_both_ways() {
        let dir = std::env::temp_dir().join(format!("bm-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut client = connect(&NbdAddress::Unix(path.clone())).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        std::fs::remove_dir_all(&dir).unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = connect(&NbdAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        })
        .unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(b"pong").unwrap();
        let mut reader = client.try_clone().unwrap();
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        client.shutdown(Shutdown::Both).unwrap();
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
    }
}
