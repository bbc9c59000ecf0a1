//! RabbitMQ tutorial 1, "Hello World!" (<https://www.rabbitmq.com/tutorials/tutorial-one-python>):
//! a producer sends one message to a named queue through the default exchange, a consumer
//! receives it.
//!
//! Both sides run in this one program against the broker at `AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`); the queue has a unique name and is deleted at the
//! end, so several copies can run at once.
//!
//! `cargo run -p amqp091-client --example hello_world`

// An example's output is its point.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use amqp_client::prelude::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> Result<()> {
    let conn = Connection::connect(&amqp_url()).await?;
    let queue = format!("hello-{}", std::process::id());

    // The receiving side: declare the queue (idempotent, both sides do it) and consume.
    let receiver = conn.open_channel().await?;
    receiver
        .queue_declare(&queue, QueueDeclareOptions::default())
        .await?;
    let mut consumer = receiver
        .basic_consume(&queue, ConsumeOptions::default().with_no_ack())
        .await?;
    println!(" [*] Waiting for messages on {queue}");

    // The sending side, on its own channel.
    let sender = conn.open_channel().await?;
    sender
        .queue_declare(&queue, QueueDeclareOptions::default())
        .await?;
    sender
        .basic_publish(
            "",
            &queue,
            PublishOptions::default(),
            &BasicProperties::default(),
            "Hello World!",
        )
        .await?
        // Outside confirm mode the outcome is known at once: NotRequested.
        .await?;
    println!(" [x] Sent 'Hello World!'");

    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
        .await
        .map_err(|_| "no message within 10 s")?
        .ok_or("the consumer ended")??;
    println!(
        " [x] Received '{}'",
        String::from_utf8_lossy(&delivery.body)
    );

    consumer.cancel().await?;
    receiver.queue_delete(&queue, Default::default()).await?;
    conn.close().await?;
    println!("hello_world: sent 1, received 1");
    Ok(())
}
