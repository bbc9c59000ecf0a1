//! The program a newcomer writes in their first ten minutes, held by a test so the API cannot
//! drift from it: connect from a URI, declare a durable quorum queue with a length limit from a
//! literal table, publish JSON with a content type and a header under publisher confirms,
//! consume as a `Stream`, ack, close. Everything comes from `amqp_client::prelude`: no
//! `amqp_codec` import and no empty `FieldTable` passed around.
//!
//! The second test reads this file and fails if the program section ever needs either.

mod common;

use common::{Cleanup, LIMIT, within};

// ---- the ten-minute program ----
use amqp_client::prelude::*;
use futures_util::StreamExt;

/// Declares `queue`, publishes one JSON task to it with a confirm, takes it back from a
/// consumer stream and acks it; returns the body and the `tenant` header it received.
async fn ten_minute_program(url: &str, queue: &str) -> Result<(String, String), Error> {
    let conn = Connection::connect(url).await?;
    let channel = conn.open_channel().await?;

    let arguments = field_table! { "x-queue-type" => "quorum", "x-max-length" => 10_000 };
    let options = QueueDeclareOptions::durable().with_arguments(arguments);
    channel.queue_declare(queue, options).await?;

    channel.confirm_select().await?;
    let properties = BasicProperties::builder()
        .with_content_type("application/json")
        .with_header("tenant", "acme")
        .persistent()
        .build()?;
    let body = r#"{"task":"resize","id":42}"#;
    let confirm = channel
        .basic_publish("", queue, PublishOptions::mandatory(), &properties, body)
        .await?;
    assert!(confirm.await?.is_acked(), "the broker took the message");

    channel.basic_qos(10, QosOptions::default()).await?;
    let mut deliveries = channel
        .basic_consume(queue, ConsumeOptions::default())
        .await?;
    let delivery = deliveries.next().await.expect("one delivery")?;
    let tenant = delivery.properties.headers().and_then(|h| h.get("tenant"));
    let tenant = tenant.and_then(|v| v.as_str().map(str::to_owned));
    let text = String::from_utf8_lossy(&delivery.body).into_owned();
    delivery.ack()?;

    conn.close().await?;
    Ok((text, tenant.unwrap_or_default()))
}
// ---- end of the program ----

#[tokio::test]
async fn the_ten_minute_program_runs_against_the_broker() {
    let mut names = Cleanup::new();
    let queue = names.queue("ten-minutes");
    let (body, tenant) = within(
        LIMIT,
        ten_minute_program(&amqp_test_support::broker_url(), &queue),
    )
    .await
    .expect("the program runs");
    assert_eq!(body, r#"{"task":"resize","id":42}"#);
    assert_eq!(tenant, "acme");
}

#[test]
fn the_program_needs_no_codec_import_and_no_empty_table() {
    let source = include_str!("ten_minutes.rs");
    let start = source
        .find("// ---- the ten-minute program ----")
        .expect("start marker");
    let end = source
        .find("// ---- end of the program ----")
        .expect("end marker");
    let program = &source[start..end];
    for needle in [
        concat!("amqp_", "codec"),
        concat!("FieldTable::", "default"),
        concat!("FieldTable::", "new"),
        concat!("ShortStr::", "try_from"),
    ] {
        assert!(!program.contains(needle), "the program uses {needle}");
    }
    let lines = program.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 40, "the program grew to {lines} lines");
}
