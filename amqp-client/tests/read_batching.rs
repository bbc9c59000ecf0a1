//! Read batching against a scripted broker on 127.0.0.1: a fast stream raises the socket's
//! low-water mark, the bytes left under it are still read within `max_wait`, and a pause
//! lowers the mark again, so a lone message afterwards is read at once.

// Test scaffolding: a failed step of the script is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use amqp_client::amqp_codec::methods::{BasicConsumeOk, BasicDeliver};
use amqp_client::amqp_codec::{BasicProperties, Method, Outbound, ShortStr};
use amqp_client::{Connection, ConnectionConfig, ConsumeOptions, Consumer, ReadBatching};
use amqp_test_support::scripted_broker::{Peer, ScriptedBroker};
use bytes::Buf;

/// Deliveries per burst: about 1.1 MB, far above the rate that engages batching.
const BURST: u64 = 1000;
/// Deliveries the peer writes at a time, like a broker flushing its writer.
const PER_WRITE: u64 = 8;
const TAG: &str = "batched";

/// `count` deliveries of 1000-byte bodies with tags from `first`, encoded as one buffer.
fn deliveries(first: u64, count: u64) -> Vec<u8> {
    let mut out = Outbound::new();
    for tag in first..first + count {
        let deliver = Method::BasicDeliver(BasicDeliver {
            consumer_tag: ShortStr::from_static(TAG),
            delivery_tag: tag,
            redelivered: false,
            exchange: ShortStr::from_static(""),
            routing_key: ShortStr::from_static("q"),
        });
        let body = bytes::Bytes::from(tag.to_be_bytes().repeat(125));
        out.push_content(1, &deliver, &BasicProperties::default(), body, 131_072)
            .unwrap();
    }
    out.copy_to_bytes(out.remaining()).to_vec()
}

/// Sends `count` deliveries from tag `first`, `PER_WRITE` to a write.
async fn stream(peer: &mut Peer, first: u64, count: u64) {
    let mut tag = first;
    while tag < first + count {
        let n = PER_WRITE.min(first + count - tag);
        peer.send_raw(&deliveries(tag, n)).await;
        tag += n;
    }
}

/// Receives deliveries until tag `last`, checking that tags come in order from `first`.
async fn receive_through(consumer: &mut Consumer, first: u64, last: u64) {
    for expected in first..=last {
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("delivery {expected} did not arrive"))
            .unwrap()
            .unwrap();
        assert_eq!(delivery.delivery_tag, expected);
        assert_eq!(&delivery.body[..8], &expected.to_be_bytes());
    }
}

/// The peer's side of the client's consume: channel 1 opened, basic.consume answered.
async fn accept_consumer(listener: &ScriptedBroker) -> Peer {
    let mut peer = listener.accept(0).await;
    peer.open_channel(1).await;
    assert!(matches!(peer.recv().await, Method::BasicConsume(_)));
    peer.send(
        1,
        Method::BasicConsumeOk(BasicConsumeOk {
            consumer_tag: ShortStr::from_static(TAG),
        }),
    )
    .await;
    peer
}

/// The client's side: connects without heartbeats (nothing but the batcher's own timer may
/// pick up a tail) and consumes with automatic acks.
async fn consume(port: u16, batching: Option<ReadBatching>) -> (Connection, Consumer) {
    let config = ConnectionConfig::builder()
        .port(port)
        .heartbeat(0)
        .read_batching(batching)
        .build();
    let conn = Connection::connect_with(config).await.unwrap();
    let ch = conn.open_channel().await.unwrap();
    let options = ConsumeOptions::tagged(TAG).with_no_ack();
    let consumer = ch.basic_consume("q", options).await.unwrap();
    (conn, consumer)
}

#[tokio::test]
async fn a_stream_is_read_in_batches_and_its_tail_and_a_lone_message_still_arrive() {
    let listener = ScriptedBroker::bind().await.unwrap();
    let port = listener.port();
    let (lone_sent_tx, lone_sent) = tokio::sync::oneshot::channel::<Instant>();
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    let (again_tx, again) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut peer = accept_consumer(&listener).await;
        // A burst, and straight after it a tail much smaller than the low-water mark.
        stream(&mut peer, 1, BURST).await;
        stream(&mut peer, BURST + 1, 3).await;
        // A pause long enough for the timed read to find nothing, then one message.
        go.await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = lone_sent_tx.send(Instant::now());
        stream(&mut peer, BURST + 4, 1).await;
        // Once the client has it, a second burst engages batching again.
        again.await.unwrap();
        stream(&mut peer, BURST + 5, BURST).await;
        // Stay connected and silent until the client is done.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(peer);
    });
    let batching = ReadBatching {
        min_bytes: 64 * 1024,
        max_wait: Duration::from_millis(1),
    };
    let (conn, mut consumer) = consume(port, Some(batching)).await;

    // The tail is under the mark and nothing follows it: only the timed read brings it.
    receive_through(&mut consumer, 1, BURST + 3).await;
    let first = conn.io_stats();
    assert!(first.batching_engaged >= 1, "{first:?}");
    assert!(
        first.reads < BURST / 4,
        "{} reads for {BURST} deliveries: {first:?}",
        first.reads
    );
    go_tx.send(()).unwrap();

    // After the pause the mark is back to 1: the lone message is read as soon as it lands.
    receive_through(&mut consumer, BURST + 4, BURST + 4).await;
    let waited = lone_sent.await.unwrap().elapsed();
    assert!(waited < Duration::from_millis(500), "waited {waited:?}");
    again_tx.send(()).unwrap();

    receive_through(&mut consumer, BURST + 5, 2 * BURST + 4).await;
    let second = conn.io_stats();
    assert!(
        second.batching_engaged > first.batching_engaged,
        "{first:?} then {second:?}"
    );
    assert!(second.bytes_read > first.bytes_read);
    server.abort();
}

#[tokio::test]
async fn without_batching_every_arrival_is_read_and_nothing_engages() {
    let listener = ScriptedBroker::bind().await.unwrap();
    let port = listener.port();
    let server = tokio::spawn(async move {
        let mut peer = accept_consumer(&listener).await;
        stream(&mut peer, 1, BURST).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(peer);
    });
    let (conn, mut consumer) = consume(port, None).await;
    receive_through(&mut consumer, 1, BURST).await;
    let stats = conn.io_stats();
    assert_eq!(stats.batching_engaged, 0, "{stats:?}");
    assert!(stats.reads > 0 && stats.writes > 0, "{stats:?}");
    server.abort();
}
