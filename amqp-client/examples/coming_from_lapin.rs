//! The tour of `amqp-client/docs/coming-from-lapin.md` as one program: every step a lapin user
//! knows, in this client's API, against the broker at `AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`).
//!
//! Connect with a name, declare a durable exchange and queue (with arguments) and bind them,
//! publish four messages with properties and confirms (one unroutable, which comes back), set a
//! prefetch, fetch one with basic.get, consume the rest (one is nacked and requeued once, one
//! rejected), read a 404 as a channel error, then delete everything and close. Names are unique
//! per process, so several copies can run at once.
//!
//! `cargo run -p amqp091-client --example coming_from_lapin`

// An example's output is its point.
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::time::Duration;

use amqp_client::prelude::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> Result<()> {
    // lapin: Connection::connect(uri, ConnectionProperties::default().with_connection_name(..))
    let mut config = ConnectionConfig::from_uri(&amqp_url())?;
    config.connection_name = Some("coming-from-lapin".into());
    let conn = Connection::connect_with(config).await?;
    let ch = conn.open_channel().await?;

    let name = format!("lapin-tour-{}", std::process::id());
    ch.exchange_declare(
        &name,
        ExchangeKind::Direct,
        ExchangeDeclareOptions::durable(),
    )
    .await?;
    let queue = ch
        .queue_declare(
            &name,
            QueueDeclareOptions::durable().with_arguments(field_table! {
                "x-queue-type" => "classic",
                "x-max-length" => 1_000,
            }),
        )
        .await?;
    ch.queue_bind(&name, &name, "tour", BindOptions::default())
        .await?;
    println!("declared {} ({} ready)", queue.name, queue.message_count);

    // Publisher confirms: each publish's future resolves with the broker's answer.
    ch.confirm_select().await?;
    let (mut acked, mut returned) = (0, 0);
    for (id, key) in [
        ("m-1", "tour"),
        ("m-2", "tour"),
        ("m-3", "tour"),
        ("m-x", "nowhere"),
    ] {
        let props = BasicProperties::builder()
            .persistent()
            .with_content_type("text/plain")
            .with_message_id(id)
            .with_header("attempt", 1)
            .build()?;
        let confirm = ch
            .basic_publish(
                &name,
                key,
                PublishOptions::mandatory(),
                &props,
                id.to_owned(),
            )
            .await?;
        match confirm.await? {
            Confirmation::Acked => acked += 1,
            Confirmation::Returned(r) => {
                println!("{id} returned: {} {}", r.reply_code, r.reply_text);
                returned += 1;
            }
            other => return Err(format!("{id} not taken: {other:?}").into()),
        }
    }

    ch.basic_qos(10, QosOptions::default()).await?;

    // basic.get: one message, settled like a delivery.
    let got = ch
        .basic_get(&name, GetOptions::default())
        .await?
        .ok_or("basic.get found the queue empty")?;
    let first = message_id(&got.delivery);
    println!("got {first} ({} more ready)", got.message_count);
    got.delivery.ack()?;

    // Consume the other two: the first not-yet-redelivered one is nacked back to the queue
    // once, everything else acked.
    let mut consumer = ch.basic_consume(&name, ConsumeOptions::default()).await?;
    let mut consumed = BTreeSet::new();
    let mut requeued = None;
    while consumed.len() < 2 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .map_err(|_| "no delivery within 10 s")?
            .ok_or("the consumer ended")??;
        let id = message_id(&delivery);
        let attempt = delivery.properties.headers().and_then(|h| h.get("attempt"));
        if requeued.is_none() && !delivery.redelivered {
            delivery.nack(NackOptions::requeue())?;
            requeued = Some(id);
        } else {
            assert_eq!(attempt.and_then(|a| a.as_i64()), Some(1));
            delivery.ack()?;
            consumed.insert(id);
        }
    }
    let requeued = requeued.ok_or("nothing was requeued")?;
    println!("consumed {consumed:?}, {requeued} after one requeue");

    // Reject: without a dead-letter exchange the broker drops the message.
    let props = BasicProperties::builder()
        .with_message_id("poison")
        .build()?;
    ch.basic_publish(&name, "tour", PublishOptions::default(), &props, "poison")
        .await?
        .await?;
    let poison = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
        .await
        .map_err(|_| "no poison delivery within 10 s")?
        .ok_or("the consumer ended")??;
    poison.reject()?;
    consumer.cancel().await?;
    let left = ch
        .queue_declare(&name, QueueDeclareOptions::passive())
        .await?;

    // A channel error: the channel closes, the connection lives on.
    let probe = conn.open_channel().await?;
    let missing = format!("{name}-missing");
    let err = probe
        .queue_declare(&missing, QueueDeclareOptions::passive())
        .await
        .err()
        .ok_or("a passive declare of a missing queue succeeded")?;
    let code = err.reply_code().map(|c| c.0);
    println!(
        "missing queue: {code:?}, channel error {}, recoverable {}",
        err.is_channel_error(),
        err.is_recoverable()
    );

    ch.queue_delete(&name, QueueDeleteOptions::default())
        .await?;
    ch.exchange_delete(&name, ExchangeDeleteOptions::default())
        .await?;
    ch.close().await?;
    conn.close().await?;

    println!(
        "coming_from_lapin: {acked} acked, {returned} returned, got 1, consumed {}, \
         requeued 1, rejected 1, {} left, missing queue {}",
        consumed.len(),
        left.message_count,
        code.map_or("-".into(), |c| c.to_string()),
    );
    Ok(())
}

/// The delivery's message id, or `?`.
fn message_id(delivery: &Delivery) -> String {
    delivery
        .properties
        .message_id()
        .and_then(|id| id.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
