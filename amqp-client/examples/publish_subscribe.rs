//! RabbitMQ tutorial 3, "Publish/Subscribe" (<https://www.rabbitmq.com/tutorials/tutorial-three-python>):
//! a fanout exchange delivers every log message to every subscriber; each subscriber has its
//! own exclusive, server-named queue bound to the exchange.
//!
//! The emitter and two subscribers run in this one program against the broker at `AMQP_URL`;
//! the exchange has a unique name and is deleted at the end (the queues go with the
//! connection).
//!
//! `cargo run -p amqp091-client --example publish_subscribe`

// An example's output is its point.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use amqp_client::prelude::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const MESSAGES: usize = 5;
const SUBSCRIBERS: usize = 2;

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
        let line = String::from_utf8_lossy(&delivery.body).into_owned();
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
    let exchange = format!("logs-{}", std::process::id());
    let emitter = conn.open_channel().await?;
    emitter
        .exchange_declare(&exchange, ExchangeKind::Fanout, Default::default())
        .await?;

    // Subscribers: a fresh exclusive queue each, bound with no routing key (fanout ignores it).
    let mut subscribers = Vec::new();
    for i in 1..=SUBSCRIBERS {
        let channel = conn.open_channel().await?;
        let queue = channel
            .queue_declare("", QueueDeclareOptions::default().with_exclusive())
            .await?;
        channel
            .queue_bind(&queue.name, &exchange, "", BindOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(&queue.name, ConsumeOptions::default().with_no_ack())
            .await?;
        println!(" [*] Subscriber {i} waiting on {}", queue.name);
        subscribers.push(tokio::spawn(receive(
            format!("subscriber {i}"),
            consumer,
            MESSAGES,
        )));
    }

    for i in 1..=MESSAGES {
        let line = format!("info: log line {i}");
        emitter
            .basic_publish(
                &exchange,
                "",
                PublishOptions::default(),
                &BasicProperties::default(),
                line.clone(),
            )
            .await?
            // Outside confirm mode the outcome is known at once: NotRequested.
            .await?;
        println!(" [x] Sent '{line}'");
    }

    let mut counts = Vec::new();
    for s in subscribers {
        counts.push(s.await??.len());
    }
    emitter
        .exchange_delete(&exchange, Default::default())
        .await?;
    conn.close().await?;
    if counts.iter().all(|&c| c == MESSAGES) {
        println!("publish_subscribe: {SUBSCRIBERS} subscribers received {MESSAGES} messages each");
        Ok(())
    } else {
        Err(format!("subscribers received {counts:?}").into())
    }
}
