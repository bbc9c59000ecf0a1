//! The socket side of read batching (Linux): the receive low-water mark and a read that does
//! not wait for the runtime's readiness.
//!
//! The only `unsafe` code of the crate lives here, for two reasons measured by the
//! `clients` bench (consume with acks, 100 000 messages): batching takes the client's CPU
//! per message from about 2.2 µs to under 1 µs, most of it kernel time for wake-ups. Neither
//! socket2, nix nor rustix exposes `SO_RCVLOWAT`, and reading into a buffer's spare capacity
//! without zeroing it first needs `set_len`.

#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd};

use bytes::BytesMut;
use socket2::Socket;
use tokio::net::TcpStream;

/// A second descriptor of the connection's socket, for the two calls tokio does not offer.
#[derive(Debug)]
pub(crate) struct LowWater {
    /// A duplicate of the connection's descriptor: the same socket, closed with the driver.
    socket: Socket,
}

impl LowWater {
    /// Duplicates `tcp`'s descriptor.
    pub(crate) fn new(tcp: &TcpStream) -> io::Result<Self> {
        let fd = tcp.as_fd().try_clone_to_owned()?;
        Ok(Self {
            socket: Socket::from(fd),
        })
    }

    /// Sets `SO_RCVLOWAT`: readiness is reported once `bytes` are received (1 is the default).
    /// Linux caps it at half the largest receive buffer, and signals readiness at once when
    /// the new mark is already met.
    pub(crate) fn set(&self, bytes: u32) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: the descriptor is open for as long as `self.socket` lives; the option value
        // points at a live `c_int` and the length passed is exactly its size, which is what
        // SO_RCVLOWAT reads. The call writes nothing through the pointer.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Reads what the kernel holds into `buf`'s spare capacity without waiting, whatever the
    /// low-water mark: `Ok(0)` is the peer's end of stream, `WouldBlock` means nothing was
    /// there. The caller keeps spare capacity in `buf`.
    pub(crate) fn read_now(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        if spare.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.socket.recv_with_flags(spare, libc::MSG_DONTWAIT)?;
        // SAFETY: recv(2) wrote `n` bytes at the start of the spare capacity (socket2 only
        // passes the buffer to the system call, and `n` is at most its length), so the first
        // `buf.len() + n` bytes are initialised and within capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair on loopback, the client's low-water mark at `mark`.
    async fn marked_pair(mark: u32) -> (TcpStream, LowWater, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client = client.expect("connect");
        let low = LowWater::new(&client).expect("dup");
        low.set(mark).expect("SO_RCVLOWAT");
        (client, low, server.expect("accept").0)
    }

    /// Waits (bounded) for `client` to become readable and reads into `buf`.
    async fn read_within_5s(client: &mut TcpStream, buf: &mut [u8]) -> usize {
        tokio::time::timeout(Duration::from_secs(5), client.read(buf))
            .await
            .expect("readable")
            .expect("read")
    }

    #[tokio::test]
    async fn the_mark_holds_readiness_back_and_read_now_takes_what_is_there() {
        let (mut client, low, mut server) = marked_pair(4096).await;
        server.write_all(&[7; 100]).await.expect("write");
        // 100 bytes under a mark of 4096: the socket does not become readable.
        let mut probe = [0u8; 1];
        let waited =
            tokio::time::timeout(Duration::from_millis(100), client.read(&mut probe)).await;
        assert!(waited.is_err(), "readable under the low-water mark");
        // ... but read_now takes them.
        let mut buf = BytesMut::with_capacity(1024);
        assert_eq!(low.read_now(&mut buf).expect("read_now"), 100);
        assert!(buf.iter().all(|b| *b == 7));
        // Nothing left: WouldBlock, not end of stream.
        let err = low.read_now(&mut buf).expect_err("empty");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // Back to 1: the next byte wakes the reader at once.
        low.set(1).expect("SO_RCVLOWAT");
        server.write_all(&[9]).await.expect("write");
        let n = read_within_5s(&mut client, &mut probe).await;
        assert_eq!((n, probe[0]), (1, 9));
        // The peer's end of stream is Ok(0).
        drop(server);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(low.read_now(&mut buf).expect("eof"), 0);
    }

    #[tokio::test]
    async fn reaching_the_mark_wakes_the_reader() {
        let (mut client, _low, mut server) = marked_pair(1000).await;
        server.write_all(&[1; 600]).await.expect("write");
        server.write_all(&[2; 600]).await.expect("write");
        let mut buf = vec![0u8; 4096];
        let n = read_within_5s(&mut client, &mut buf).await;
        assert!(n >= 1000, "read {n}");
    }
}
