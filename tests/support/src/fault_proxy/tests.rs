//! The proxy against an echo server on loopback: each fault and toxic as a client sees it.

#![allow(clippy::unwrap_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::*;

/// An echo server on 127.0.0.1 (each connection echoes until EOF).
async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn proxied() -> (FaultProxy, TcpStream) {
    let proxy = FaultProxy::start(echo().await.to_string()).await.unwrap();
    let s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    (proxy, s)
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn latency_holds_each_chunk_and_keeps_order() {
    let (proxy, mut s) = proxied().await;
    proxy.latency(
        Direction::Downstream,
        Duration::from_millis(100),
        Duration::from_millis(20),
    );
    let t = Instant::now();
    for i in 0..5u8 {
        s.write_all(&[i]).await.unwrap();
    }
    assert_eq!(read_n(&mut s, 5).await, vec![0, 1, 2, 3, 4]);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(80), "{took:?}");
    proxy.clear_toxics();
    let t = Instant::now();
    s.write_all(b"x").await.unwrap();
    read_n(&mut s, 1).await;
    assert!(t.elapsed() < Duration::from_millis(50));
}

#[tokio::test]
async fn bandwidth_limits_bytes_per_second() {
    let (proxy, mut s) = proxied().await;
    proxy.bandwidth(Direction::Upstream, 100_000);
    let t = Instant::now();
    s.write_all(&[7u8; 50_000]).await.unwrap();
    read_n(&mut s, 50_000).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn slicer_delivers_everything_in_tiny_pieces() {
    let (proxy, mut s) = proxied().await;
    proxy.slicer(
        Direction::Downstream,
        Slicer {
            average_size: 3,
            size_variation: 2,
            delay: Duration::from_millis(1),
        },
    );
    let data: Vec<u8> = (0..=255u8).cycle().take(600).collect();
    s.write_all(&data).await.unwrap();
    let t = Instant::now();
    // Small reads show the pieces: many reads for 600 bytes.
    let mut got = Vec::new();
    let mut reads = 0;
    let mut buf = [0u8; 4096];
    while got.len() < data.len() {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
        reads += 1;
    }
    assert_eq!(got, data);
    assert!(reads > 20, "{reads} reads");
    assert!(t.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn a_one_way_stall_holds_one_direction_only() {
    let (proxy, mut s) = proxied().await;
    proxy.stall_one_way(Direction::Downstream, true);
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    let quiet = tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await;
    assert!(quiet.is_err(), "nothing comes back while stalled");
    // Upstream flowed: the echo already has it.
    assert_eq!(proxy.forwarded(Direction::Upstream), 4);
    assert_eq!(proxy.forwarded(Direction::Downstream), 0);
    proxy.stall_one_way(Direction::Downstream, false);
    assert_eq!(read_n(&mut s, 4).await, b"ping");
}

#[tokio::test]
async fn reset_after_n_bytes_forwards_exactly_n_then_resets() {
    let (proxy, mut s) = proxied().await;
    proxy.reset_after(Direction::Upstream, 10);
    s.write_all(b"0123456789abcdef").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
        {
            Ok(0) => break None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e.kind()),
        }
    };
    assert!(got.len() <= 10, "{got:?}");
    assert!(b"0123456789".starts_with(&got));
    assert_eq!(err, Some(io::ErrorKind::ConnectionReset));
    assert_eq!(proxy.toxic_resets(), 1);
    assert_eq!(proxy.forwarded(Direction::Upstream), 10);
}

#[tokio::test]
async fn timeout_swallows_data_then_closes() {
    let (proxy, mut s) = proxied().await;
    proxy.timeout(Direction::Upstream, Duration::from_millis(300));
    let t = Instant::now();
    s.write_all(b"gone").await.unwrap();
    let mut b = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed, nothing echoed");
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!(proxy.dropped(), 4);
    assert_eq!(proxy.toxic_timeouts(), 1);
}

#[tokio::test]
async fn cut_and_reset_still_end_every_link() {
    let (proxy, mut s) = proxied().await;
    s.write_all(b"a").await.unwrap();
    read_n(&mut s, 1).await;
    proxy.reset();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap();
    assert!(
        matches!(r, Err(ref e) if e.kind() == io::ErrorKind::ConnectionReset) || matches!(r, Ok(0))
    );
    let mut s2 = TcpStream::connect(proxy.addr()).await.unwrap();
    s2.write_all(b"b").await.unwrap();
    read_n(&mut s2, 1).await;
    proxy.cut();
    let r = tokio::time::timeout(Duration::from_secs(5), s2.read(&mut b))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0)), "{r:?}");
    assert_eq!(proxy.accepted(), 2);
}
