//! Heap allocations per message on the client's hot paths, against the real broker, counted
//! by a per-thread counting allocator on a current-thread runtime (the driver and the test
//! share the thread, so everything the client does is counted).
//!
//! The bounds are regression guards: the numbers printed are the figures to improve.

use std::time::Duration;

use amqp_client::amqp_codec::table::FieldTable;
use amqp_client::amqp_codec::{BasicProperties, ShortStr};
use amqp_client::{Connection, ConsumeOptions, PublishOptions, QosOptions, QueueDeclareOptions};
use amqp_test_support::alloc_counter::{CountingAllocator, snapshot};
use amqp_test_support::{broker_url, unique_name};
use bytes::Bytes;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

const MESSAGES: u64 = 5_000;
const WINDOW: usize = 500;

#[test]
fn allocations_per_message_publish_confirm_and_consume_ack() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let conn = Connection::connect(&broker_url()).await.unwrap();
            let ch = conn.open_channel().await.unwrap();
            let queue = unique_name("allocs");
            let opts = QueueDeclareOptions { exclusive: true, ..Default::default() };
            ch.queue_declare(&queue, opts, FieldTable::default()).await.unwrap();
            ch.confirm_select().await.unwrap();
            let props = BasicProperties::builder().with_delivery_mode(2).build();
            let body = Bytes::from_static(&[b'x'; 64]);
            // Names built once and shared: the publish itself allocates nothing for them.
            let exchange = ShortStr::from_static("");
            let queue_name = ShortStr::try_from(queue.as_str()).unwrap();

            let publish_round = |n: u64| {
                let (ch, exchange, queue, props, body) = (ch.clone(), exchange.clone(), queue_name.clone(), props.clone(), body.clone());
                async move {
                    let mut window = std::collections::VecDeque::with_capacity(WINDOW);
                    for _ in 0..n {
                        if window.len() == WINDOW {
                            let c: amqp_client::PublishConfirm = window.pop_front().unwrap();
                            assert!(c.await.unwrap().is_ack());
                        }
                        window.push_back(ch.basic_publish(&exchange, &queue, PublishOptions::default(), &props, body.clone()).await.unwrap());
                    }
                    for c in window {
                        assert!(c.await.unwrap().is_ack());
                    }
                }
            };
            publish_round(MESSAGES).await; // warm-up: buffers and rings reach their size
            let before = snapshot();
            publish_round(MESSAGES).await;
            let publish = (snapshot().allocations - before.allocations) as f64 / MESSAGES as f64;

            ch.basic_qos(1000, QosOptions::default()).await.unwrap();
            let mut consumer = ch.basic_consume(&queue, ConsumeOptions::default(), FieldTable::default()).await.unwrap();
            for _ in 0..MESSAGES {
                consumer.recv().await.unwrap().unwrap().ack().unwrap();
            }
            let before = snapshot();
            for _ in 0..MESSAGES {
                consumer.recv().await.unwrap().unwrap().ack().unwrap();
            }
            let consume = (snapshot().allocations - before.allocations) as f64 / MESSAGES as f64;
            eprintln!("allocations per message: publish with confirm {publish:.2}, deliver and ack {consume:.2}");
            // Guards against regressions (issue 7 drives these to zero).
            assert!(publish <= 3.0, "publish with confirm: {publish:.2} allocations per message");
            assert!(consume <= 0.1, "deliver and ack: {consume:.2} allocations per message");
            drop(consumer);
            conn.close().await.unwrap();
        })
        .await
        .expect("finished in time");
    });
}
