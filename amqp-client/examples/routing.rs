//! RabbitMQ tutorial 4, "Routing" (<https://www.rabbitmq.com/tutorials/tutorial-four-python>):
//! a direct exchange routes log messages by severity. One subscriber binds only `error` (say,
//! to write errors to disk), another binds `info`, `warning` and `error` (to print them all).
//!
//! Emitter and subscribers run in this one program against the broker at `AMQP_URL`; the
//! exchange has a unique name and is deleted at the end (the queues go with the connection).
//!
//! `cargo run -p amqp091-client --example routing`

// An example's output is its point.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use amqp_client::prelude::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Receives exactly `n` messages, then checks that no more come.
async fn receive(name: String, mut consumer: Consumer, n: usize) -> Result<Vec<String>> {
    let mut got = Vec::new();
    while got.len() < n {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .map_err(|_| format!("{name}: message {} did not arrive", got.len() + 1))?
            .ok_or("the consumer ended")??;
        let line = format!(
            "{}:{}",
            delivery.routing_key,
            String::from_utf8_lossy(&delivery.body)
        );
        println!(" [x] {name} received '{line}'");
        got.push(line);
    }
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
    {
        return Err(format!("{name}: unexpected extra message {extra:?}").into());
    }
    consumer.cancel().await?;
    Ok(got)
}

#[tokio::main]
async fn main() -> Result<()> {
    let conn = Connection::connect(&amqp_url()).await?;
    let exchange = format!("direct_logs-{}", std::process::id());
    let emitter = conn.open_channel().await?;
    emitter
        .exchange_declare(&exchange, ExchangeKind::Direct, Default::default())
        .await?;

    let logs = [
        ("info", "service started"),
        ("warning", "disk 80% full"),
        ("error", "cannot reach the database"),
        ("info", "request served"),
        ("error", "request failed"),
    ];
    let subscriptions: [&[&str]; 2] = [&["error"], &["info", "warning", "error"]];

    let mut subscribers = Vec::new();
    for severities in subscriptions {
        let channel = conn.open_channel().await?;
        let queue = channel
            .queue_declare("", QueueDeclareOptions::default().with_exclusive())
            .await?;
        for severity in severities {
            channel
                .queue_bind(&queue.name, &exchange, severity, BindOptions::default())
                .await?;
        }
        let consumer = channel
            .basic_consume(&queue.name, ConsumeOptions::default().with_no_ack())
            .await?;
        let expected = logs.iter().filter(|(s, _)| severities.contains(s)).count();
        let name = format!("[{}]", severities.join(" "));
        subscribers.push((
            name.clone(),
            expected,
            tokio::spawn(receive(name, consumer, expected)),
        ));
    }

    for (severity, message) in logs {
        emitter
            .basic_publish(
                &exchange,
                severity,
                PublishOptions::default(),
                &BasicProperties::default(),
                message,
            )
            .await?
            // Outside confirm mode the outcome is known at once: NotRequested.
            .await?;
        println!(" [x] Sent {severity}:'{message}'");
    }

    let mut summary = Vec::new();
    for (name, expected, task) in subscribers {
        let got = task.await??;
        if got.len() != expected {
            return Err(format!("{name} got {} messages, expected {expected}", got.len()).into());
        }
        summary.push(format!("subscriber {name} got {}", got.len()));
    }
    emitter
        .exchange_delete(&exchange, Default::default())
        .await?;
    conn.close().await?;
    println!("routing: {}", summary.join(", "));
    Ok(())
}
