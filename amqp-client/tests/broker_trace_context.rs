//! Feature `trace-context` against the real broker at `AMQP_URL`: a context injected into a
//! message's headers by the publisher is extracted by the consumer, the same trace; one hop
//! further (`child`) keeps the trace id; a message without one has none.

mod common;

use amqp_client::{BasicProperties, PublishOptions, TraceContext};
use common::{Cleanup, LIMIT, connect, next, plain, within};

#[tokio::test]
async fn a_context_published_in_the_headers_is_extracted_by_the_consumer() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-traceparent");
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.confirm_select().await.unwrap();
        let sent = TraceContext::new_root(true).with_tracestate("vendor=abc");
        let base = BasicProperties::builder()
            .with_header("tenant", "acme")
            .build()
            .unwrap();
        let props = sent.child().inject_properties(&base).unwrap();
        for props in [&props, &BasicProperties::default()] {
            let confirm = ch
                .basic_publish("", &q, PublishOptions::default(), props, "traced")
                .await
                .unwrap();
            assert!(confirm.await.unwrap().is_acked());
        }
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let traced = next(&mut consumer).await;
        let got = traced.trace_context().expect("the context travelled");
        assert_eq!(got.trace_id(), sent.trace_id());
        assert_ne!(
            got.parent_id(),
            sent.parent_id(),
            "the publisher's hop is the parent"
        );
        assert!(got.sampled());
        assert_eq!(got.tracestate(), Some("vendor=abc"));
        let headers = traced.properties.headers().unwrap();
        assert_eq!(headers.get("tenant").unwrap().as_str(), Some("acme"));
        traced.ack().unwrap();
        let plain_msg = next(&mut consumer).await;
        assert_eq!(plain_msg.trace_context(), None);
        plain_msg.ack().unwrap();
        ch.close().await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}
