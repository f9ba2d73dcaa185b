//! A connection's byte stream, plaintext or TLS, and its two halves.
//!
//! Each connection task relays the two directions concurrently, so both of its sockets are
//! split. A plaintext socket splits into owned halves at no cost; a TLS session is one state
//! machine for both directions, so its halves share it through [`tokio::io::split`]. The halves
//! are boxed so that the relay code is written once for every combination of plaintext and TLS
//! on the two sides (one virtual call per read or write, not per byte).

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The reading half of a connection.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// A socket, with or without a TLS session on it.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
        }
    }
}
