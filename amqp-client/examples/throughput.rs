//! Quick throughput check against the broker at `AMQP_URL`: persistent 64-byte messages to a
//! durable queue, published with a window of unconfirmed publishes, then consumed with a
//! prefetch and acked one by one. Prints msg/s and client CPU per message.
//!
//! `cargo run --release -p amqp091-client --example throughput -- [MESSAGES] [WINDOW] [PREFETCH]`
//!
//! The side-by-side comparison with lapin and amqprs lives in `benches/`; this is the quick
//! look a user takes first.

// An example program: printing its results is its job.
#![allow(clippy::print_stdout)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use amqp_client::prelude::*;
use bytes::Bytes;

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    // /proc/self/stat fields 14 and 15: utime and stime in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let messages = args.next().flatten().unwrap_or(100_000);
    let window = args.next().flatten().unwrap_or(1000);
    let prefetch = args.next().flatten().unwrap_or(1000);
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());

    let conn = Connection::connect(&url).await?;
    let ch = conn.open_channel().await?;
    let queue = format!("throughput-{}", std::process::id());
    ch.queue_declare(&queue, QueueDeclareOptions::default().with_durable())
        .await?;
    ch.confirm_select().await?;
    let props = BasicProperties::persistent();
    let body = Bytes::from(vec![b'x'; 64]);

    let (t0, c0) = (Instant::now(), cpu_time());
    let mut in_flight = VecDeque::with_capacity(window);
    for _ in 0..messages {
        if in_flight.len() >= window
            && let Some(confirm) = in_flight.pop_front()
        {
            let confirm: amqp_client::PublishConfirm = confirm;
            assert!(confirm.await?.is_acked());
        }
        in_flight.push_back(
            ch.basic_publish("", &queue, PublishOptions::default(), &props, body.clone())
                .await?,
        );
    }
    for confirm in in_flight {
        assert!(confirm.await?.is_acked());
    }
    let (pub_wall, pub_cpu) = (t0.elapsed(), cpu_time() - c0);

    ch.basic_qos(
        u16::try_from(prefetch).unwrap_or(u16::MAX),
        QosOptions::default(),
    )
    .await?;
    let (t1, c1) = (Instant::now(), cpu_time());
    let mut consumer = ch.basic_consume(&queue, ConsumeOptions::default()).await?;
    for _ in 0..messages {
        let delivery = consumer
            .recv()
            .await
            .ok_or(Error::InvalidUse("consumer ended early"))??;
        delivery.ack()?;
    }
    let (con_wall, con_cpu) = (t1.elapsed(), cpu_time() - c1);
    drop(consumer);
    ch.queue_delete(&queue, QueueDeleteOptions::default())
        .await?;
    conn.close().await?;

    let rate = |wall: Duration| messages as f64 / wall.as_secs_f64();
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / messages as f64;
    println!("messages {messages}, window {window}, prefetch {prefetch}");
    println!(
        "publish with confirms: {:>8.0} msg/s, {:.2} µs client CPU/msg",
        rate(pub_wall),
        per(pub_cpu)
    );
    println!(
        "consume with ack:      {:>8.0} msg/s, {:.2} µs client CPU/msg",
        rate(con_wall),
        per(con_cpu)
    );
    Ok(())
}
