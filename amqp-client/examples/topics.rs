//! RabbitMQ tutorial 5, "Topics" (<https://www.rabbitmq.com/tutorials/tutorial-five-python>):
//! a topic exchange routes by pattern: `*` matches one word, `#` zero or more. Q1 binds
//! `*.orange.*`; Q2 binds `*.*.rabbit` and `lazy.#`. The tutorial's routing keys are sent and
//! each queue must get exactly the messages its patterns match.
//!
//! Emitter and subscribers run in this one program against the broker at `AMQP_URL`; the
//! exchange has a unique name and is deleted at the end (the queues go with the connection).
//!
//! `cargo run -p amqp091-client --example topics`

// An example's output is its point.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use amqp_client::prelude::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Receives exactly `n` messages (their routing keys), then checks that no more come.
async fn receive(name: String, mut consumer: Consumer, n: usize) -> Result<Vec<String>> {
    let mut got = Vec::new();
    while got.len() < n {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .map_err(|_| format!("{name}: message {} did not arrive", got.len() + 1))?
            .ok_or("the consumer ended")??;
        let key = delivery.routing_key.to_string();
        println!(" [x] {name} received {key}");
        got.push(key);
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
    let exchange = format!("topic_logs-{}", std::process::id());
    let emitter = conn.open_channel().await?;
    emitter
        .exchange_declare(&exchange, ExchangeKind::Topic, Default::default())
        .await?;

    // (routing key, goes to Q1, goes to Q2), from the tutorial.
    let keys = [
        ("quick.orange.rabbit", true, true),
        ("lazy.orange.elephant", true, true),
        ("quick.orange.fox", true, false),
        ("lazy.brown.fox", false, true),
        ("lazy.pink.rabbit", false, true), // matches both Q2 patterns, delivered once
        ("quick.brown.fox", false, false),
        ("orange", false, false),
        ("quick.orange.new.rabbit", false, false),
        ("lazy.orange.new.rabbit", false, true),
    ];
    let queues: [(&str, &[&str]); 2] = [("Q1", &["*.orange.*"]), ("Q2", &["*.*.rabbit", "lazy.#"])];

    let mut subscribers = Vec::new();
    for (index, (name, patterns)) in queues.into_iter().enumerate() {
        let channel = conn.open_channel().await?;
        let queue = channel
            .queue_declare("", QueueDeclareOptions::default().with_exclusive())
            .await?;
        for pattern in patterns {
            channel
                .queue_bind(&queue.name, &exchange, pattern, BindOptions::default())
                .await?;
        }
        let consumer = channel
            .basic_consume(&queue.name, ConsumeOptions::default().with_no_ack())
            .await?;
        let expected: Vec<String> = keys
            .iter()
            .filter(|k| if index == 0 { k.1 } else { k.2 })
            .map(|k| k.0.to_owned())
            .collect();
        subscribers.push((
            name,
            expected.clone(),
            tokio::spawn(receive(name.to_owned(), consumer, expected.len())),
        ));
    }

    for (key, _, _) in keys {
        emitter
            .basic_publish(
                &exchange,
                key,
                PublishOptions::default(),
                &BasicProperties::default(),
                format!("message for {key}"),
            )
            .await?
            // Outside confirm mode the outcome is known at once: NotRequested.
            .await?;
        println!(" [x] Sent {key}");
    }

    let mut summary = Vec::new();
    for (name, expected, task) in subscribers {
        let got = task.await??;
        if got != expected {
            return Err(format!("{name} got {got:?}, expected {expected:?}").into());
        }
        summary.push(format!("{name} got {}", got.len()));
    }
    emitter
        .exchange_delete(&exchange, Default::default())
        .await?;
    conn.close().await?;
    println!("topics: {}", summary.join(", "));
    Ok(())
}
