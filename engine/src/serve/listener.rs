//! Listening sockets for the export and the monitor: unix sockets created mode 0600 (NBD
//! and QMP have no authentication: only the owner may connect), TCP on the address given.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::net::Stream;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// A unix socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenAddress::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// A bound, listening socket.
pub(super) enum Listener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp(TcpListener),
}

impl Listener {
    /// Binds and listens. A unix socket path that exists is refused unless it is a socket
    /// nobody listens on any more (left by a process that died), which is replaced.
    pub(super) fn bind(address: &ListenAddress) -> io::Result<Self> {
        match address {
            ListenAddress::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = bind_unix_private(path)?;
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            ListenAddress::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr)?)),
        }
    }

    /// The address actually bound (a TCP port 0 becomes the port the kernel chose).
    pub(super) fn address(&self) -> io::Result<ListenAddress> {
        Ok(match self {
            Listener::Unix { path, .. } => ListenAddress::Unix(path.clone()),
            Listener::Tcp(l) => ListenAddress::Tcp(l.local_addr()?),
        })
    }

    pub(super) fn accept(&self) -> io::Result<Stream> {
        Ok(match self {
            Listener::Unix { listener, .. } => Stream::Unix(listener.accept()?.0),
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept()?;
                let _ = stream.set_nodelay(true);
                Stream::Tcp(stream)
            }
        })
    }

    /// Unblocks a thread waiting in `accept` (by connecting to ourselves), so it can see that
    /// the server stops.
    pub(super) fn wake(&self) {
        match self {
            Listener::Unix { path, .. } => drop(UnixStream::connect(path)),
            Listener::Tcp(l) => {
                if let Ok(mut addr) = l.local_addr() {
                    if addr.ip().is_unspecified() {
                        addr.set_ip(if addr.is_ipv4() {
                            [127, 0, 0, 1].into()
                        } else {
                            std::net::Ipv6Addr::LOCALHOST.into()
                        });
                    }
                    drop(std::net::TcpStream::connect(addr));
                }
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by another server", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// socket + bind + chmod 0600 + listen: the socket file never accepts a connection before
/// its mode is the owner's only.
fn bind_unix_private(path: &Path) -> io::Result<UnixListener> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: plain zeroed C struct.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long or invalid", path.display()),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: socket() returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of at least `len` bytes.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let chmod = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    };
    // SAFETY: listen on our own bound socket.
    if chmod.is_err() || unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        let err = chmod.err().unwrap_or_else(io::Error::last_os_error);
        let _ = std::fs::remove_file(path);
        return Err(err);
    }
    Ok(UnixListener::from(fd))
}
