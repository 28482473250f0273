//! NBD URIs: `nbd://host[:port]/export` (TCP) and `nbd+unix:///export?socket=PATH` (Unix
//! socket), with percent-decoding of the export name and the socket path.
//!
//! The path after the first `/` is the export name, verbatim once decoded (so
//! `nbd://h//disk` names `/disk`, and no path names the default export `""`). TLS schemes
//! (`nbds`, `nbds+unix`) are refused: this implementation has no TLS, and the URI asks
//! that the connection fail without it. Unknown query parameters are refused too.

use std::fmt;
use std::path::PathBuf;

/// The IANA port for NBD.
pub const DEFAULT_PORT: u16 = 10809;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdAddress {
    /// A Unix domain socket.
    Unix(PathBuf),
    /// A TCP address (an IPv6 literal is held without brackets).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// A parsed NBD URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdUri {
    /// Where to connect.
    pub address: NbdAddress,
    /// The export's name (may be empty: the default export).
    pub export: String,
}

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Not `nbd://`, `nbd+unix://`, or a TLS scheme.
    #[error("unsupported URI scheme {0:?} (expected nbd:// or nbd+unix://)")]
    Scheme(String),
    /// `nbds://` or `nbds+unix://`.
    #[error("TLS ({0}://) is not supported")]
    Tls(String),
    /// A `%` not followed by two hex digits, or a name that is not UTF-8 or holds a NUL.
    #[error("bad percent-encoding in {0:?}")]
    Encoding(String),
    /// `nbd://` without a host.
    #[error("missing host")]
    MissingHost,
    /// A port that is not a number from 0 to 65535.
    #[error("bad port {0:?}")]
    Port(String),
    /// A bracketed IPv6 literal without its closing bracket, or junk after it.
    #[error("bad host {0:?}")]
    Host(String),
    /// `nbd+unix://` without `socket=`.
    #[error("nbd+unix:// needs a socket= query parameter")]
    MissingSocket,
    /// `nbd+unix://` with a host, or user information in either.
    #[error("unexpected authority {0:?}")]
    Authority(String),
    /// A query parameter this implementation does not know (or one that does not fit the
    /// scheme, such as `socket=` with TCP).
    #[error("unsupported query parameter {0:?}")]
    Parameter(String),
}

impl NbdUri {
    /// Whether `text` is meant as an NBD URI rather than a path: it starts with `nbd:` or
    /// `nbd+` (or the TLS forms `nbds:` / `nbds+`, so they get a clear refusal).
    pub fn looks_like_uri(text: &str) -> bool {
        ["nbd:", "nbd+", "nbds:", "nbds+"]
            .iter()
            .any(|prefix| text.starts_with(prefix))
    }

    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| UriError::Scheme(text.to_owned()))?;
        let unix = match scheme {
            "nbd" => false,
            "nbd+unix" => true,
            "nbds" | "nbds+unix" => return Err(UriError::Tls(scheme.to_owned())),
            other => return Err(UriError::Scheme(other.to_owned())),
        };
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest
            .find('/')
            .map_or((rest, ""), |slash| (&rest[..slash], &rest[slash + 1..]));
        let export =
            String::from_utf8(decode(path)?).map_err(|_| UriError::Encoding(path.to_owned()))?;
        if export.contains('\0') {
            return Err(UriError::Encoding(path.to_owned()));
        }
        let mut socket = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match String::from_utf8(decode(key)?).as_deref() {
                Ok("socket") if unix => socket = Some(decode(value)?),
                _ => return Err(UriError::Parameter(key.to_owned())),
            }
        }
        if authority.contains('@') {
            return Err(UriError::Authority(authority.to_owned()));
        }
        let address = if unix {
            if !authority.is_empty() {
                return Err(UriError::Authority(authority.to_owned()));
            }
            let socket = socket
                .filter(|s| !s.is_empty())
                .ok_or(UriError::MissingSocket)?;
            NbdAddress::Unix(bytes_to_path(socket))
        } else {
            let (host, port) = split_host_port(authority)?;
            NbdAddress::Tcp { host, port }
        };
        Ok(Self { address, export })
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), UriError> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UriError::Host(authority.to_owned()))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| UriError::Host(authority.to_owned()))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UriError::MissingHost);
    }
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(port) => port.parse().map_err(|_| UriError::Port(port.to_owned()))?,
    };
    Ok((host.to_owned(), port))
}

#[cfg(unix)]
fn bytes_to_path(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

#[cfg(not(unix))]
fn bytes_to_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

/// Percent-decodes `text` into bytes.
fn decode(text: &str) -> Result<Vec<u8>, UriError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UriError::Encoding(text.to_owned()))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `/`.
fn encode(bytes: &[u8], out: &mut fmt::Formatter<'_>) -> fmt::Result {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            write!(out, "{}", b as char)?;
        } else {
            write!(out, "%{b:02X}")?;
        }
    }
    Ok(())
}

impl fmt::Display for NbdUri {
    /// The URI back, in a form [`NbdUri::parse`] reads as the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            NbdAddress::Tcp { host, port } => {
                if host.contains(':') {
                    write!(f, "nbd://[{host}]")?;
                } else {
                    write!(f, "nbd://{host}")?;
                }
                if *port != DEFAULT_PORT {
                    write!(f, ":{port}")?;
                }
                f.write_str("/")?;
                encode(self.export.as_bytes(), f)
            }
            NbdAddress::Unix(path) => {
                f.write_str("nbd+unix:///")?;
                encode(self.export.as_bytes(), f)?;
                f.write_str("?socket=")?;
                encode(path.as_os_str().as_encoded_bytes(), f)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, export: &str) -> NbdUri {
        NbdUri {
            address: NbdAddress::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    #[test]
    fn export_names_follow_the_path() {
        assert_eq!(
            NbdUri::parse("nbd://example.com/disk").unwrap(),
            tcp("example.com", 10809, "disk")
        );
        assert_eq!(
            NbdUri::parse("nbd://example.com/").unwrap(),
            tcp("example.com", 10809, "")
        );
        assert_eq!(
            NbdUri::parse("nbd://example.com").unwrap(),
            tcp("example.com", 10809, "")
        );
        assert_eq!(
            NbdUri::parse("nbd://example.com//disk").unwrap(),
            tcp("example.com", 10809, "/disk")
        );
        assert_eq!(
            NbdUri::parse("nbd://example.com/hello%20world").unwrap(),
            tcp("example.com", 10809, "hello world")
        );
    }

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(
            NbdUri::parse("nbd://h:1234/x").unwrap(),
            tcp("h", 1234, "x")
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1]/x").unwrap(),
            tcp("::1", 10809, "x")
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1]:99/x").unwrap(),
            tcp("::1", 99, "x")
        );
        assert_eq!(
            NbdUri::parse("nbd://h:99999/"),
            Err(UriError::Port("99999".into()))
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1/"),
            Err(UriError::Host("[::1".into()))
        );
        assert_eq!(NbdUri::parse("nbd:///x"), Err(UriError::MissingHost));
    }

    #[test]
    fn unix_sockets() {
        let uri = NbdUri::parse("nbd+unix:///disk?socket=/tmp/my%20sock").unwrap();
        assert_eq!(uri.address, NbdAddress::Unix("/tmp/my sock".into()));
        assert_eq!(uri.export, "disk");
        assert_eq!(
            NbdUri::parse("nbd+unix:///disk"),
            Err(UriError::MissingSocket)
        );
        assert_eq!(
            NbdUri::parse("nbd+unix://host/disk?socket=s"),
            Err(UriError::Authority("host".into()))
        );
        assert_eq!(
            NbdUri::parse("nbd://h/disk?socket=s"),
            Err(UriError::Parameter("socket".into()))
        );
        assert_eq!(
            NbdUri::parse("nbd+unix:///?socket=s&tls-type=x509"),
            Err(UriError::Parameter("tls-type".into()))
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            NbdUri::parse("nbds://h/x"),
            Err(UriError::Tls("nbds".into()))
        );
        assert_eq!(
            NbdUri::parse("nbds+unix:///x?socket=s"),
            Err(UriError::Tls("nbds+unix".into()))
        );
        assert_eq!(
            NbdUri::parse("http://h/x"),
            Err(UriError::Scheme("http".into()))
        );
        assert_eq!(
            NbdUri::parse("nbd://h/%zz"),
            Err(UriError::Encoding("%zz".into()))
        );
        assert_eq!(
            NbdUri::parse("nbd://h/%00"),
            Err(UriError::Encoding("%00".into()))
        );
        assert!(NbdUri::parse("/dev/sda").is_err());
    }

    #[test]
    fn looks_like_uri_tells_paths_apart() {
        assert!(NbdUri::looks_like_uri("nbd://h/x"));
        assert!(NbdUri::looks_like_uri("nbd+unix:///x?socket=s"));
        assert!(!NbdUri::looks_like_uri("/var/lib/nbd.img"));
        assert!(!NbdUri::looks_like_uri("nbdisk.img"));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "nbd://example.com/disk",
            "nbd://[::1]:99/a%20b",
            "nbd://h//slash",
            "nbd+unix:///disk?socket=/tmp/s%26x",
            "nbd+unix:///?socket=/run/nbd.sock",
        ] {
            let uri = NbdUri::parse(text).unwrap();
            assert_eq!(uri.to_string(), text);
            assert_eq!(NbdUri::parse(&uri.to_string()).unwrap(), uri);
        }
    }
}
