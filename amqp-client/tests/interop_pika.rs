//! Interoperability with another client: messages published by this client and read by pika
//! (Python), and the reverse, keep every property and header value exactly. When `python3`
//! cannot import pika it fails in CI (`CI=true`; `.ci/run` installs pika first) and elsewhere
//! skips, saying so (`scripts/test` installs pika with pip when it can).

use std::process::Command;
use std::time::Duration;

use amqp_client::GetOptions;
use amqp_client::amqp_codec::table::{FieldArray, FieldTable, FieldValue};
use amqp_client::amqp_codec::{BasicProperties, ShortStr};
use amqp_client::{Connection, PublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use amqp_test_support::{broker_url, unique_name};

fn pika_available() -> bool {
    Command::new("python3")
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a Python snippet with `URL` and `QUEUE` set; returns its stdout.
fn python(script: &str, queue: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .env("URL", broker_url())
        .env("QUEUE", queue)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Reads one message with pika and prints its properties, headers and body, one per line,
/// sorted, in a form both sides can produce.
const PIKA_GET: &str = r#"
import os, pika
conn = pika.BlockingConnection(pika.URLParameters(os.environ["URL"]))
ch = conn.channel()
method, props, body = ch.basic_get(os.environ["QUEUE"], auto_ack=True)
def show(v):
    if isinstance(v, bytes): return "b:" + v.hex()
    if isinstance(v, bool): return "bool:" + str(v)
    if isinstance(v, dict): return "{" + ",".join(k + "=" + show(v[k]) for k in sorted(v)) + "}"
    if isinstance(v, list): return "[" + ",".join(show(x) for x in v) + "]"
    return type(v).__name__ + ":" + str(v)
for name in ["content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
             "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"]:
    print(name, show(getattr(props, name)))
for k in sorted(props.headers or {}):
    print("header", k, show(props.headers[k]))
print("body", body.hex())
conn.close()
"#;

/// Publishes one message with every property and a headers table with pika.
const PIKA_PUBLISH: &str = r#"
import os, pika
conn = pika.BlockingConnection(pika.URLParameters(os.environ["URL"]))
ch = conn.channel()
props = pika.BasicProperties(content_type="application/json", content_encoding="gzip",
    headers={"s": "text", "i": 42, "big": 2**40, "neg": -7, "t": True, "f": False,
             "nested": {"k": "v"}, "list": [1, "two"], "raw": b"\x00\xff"},
    delivery_mode=2, priority=5, correlation_id="corr-1", reply_to="replies",
    expiration="60000", message_id="msg-1", timestamp=1700000000, type="order.created",
    user_id="guest", app_id="pika-test", cluster_id="c1")
ch.basic_publish("", os.environ["QUEUE"], b"\x01\x02hello", props)
conn.close()
"#;

fn s(v: &str) -> ShortStr {
    ShortStr::try_from(v).expect("short string")
}

#[tokio::test]
async fn properties_and_headers_survive_both_directions() {
    if !pika_available() {
        amqp_test_support::skip_or_fail(
            "python3 cannot import pika (pip install pika, or apt-get install python3-pika)",
        );
        return;
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        let conn = Connection::connect(&broker_url()).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        let queue = unique_name("interop");
        ch.queue_declare(&queue, QueueDeclareOptions::default())
            .await
            .unwrap();

        // This client → pika.
        let headers = FieldTable::builder()
            .insert("s", "text")
            .insert("i", 42i32)
            .insert("big", 1i64 << 40)
            .insert("t", true)
            .insert(
                "nested",
                FieldTable::builder().insert("k", "v").build().unwrap(),
            )
            .insert(
                "list",
                FieldValue::Array(
                    [FieldValue::from(1i32), FieldValue::from("two")]
                        .into_iter()
                        .collect::<FieldArray>(),
                ),
            )
            .build()
            .unwrap();
        let props = BasicProperties::builder()
            .with_content_type(s("text/plain"))
            .with_content_encoding(s("identity"))
            .with_headers(headers)
            .persistent()
            .with_priority(3)
            .with_correlation_id(s("c-9"))
            .with_reply_to(s("replies-q"))
            .with_expiration(s("120000"))
            .with_message_id(s("m-9"))
            .with_timestamp(1_700_000_123)
            .with_kind(s("greeting"))
            .with_user_id(s("guest"))
            .with_app_id(s("amqp-client"))
            .with_cluster_id(s("c9"))
            .build()
            .unwrap();
        ch.confirm_select().await.unwrap();
        let confirm = ch
            .basic_publish(
                "",
                &queue,
                PublishOptions::default(),
                &props,
                &b"\x00bytes\xff"[..],
            )
            .await
            .unwrap();
        assert!(
            confirm.await.unwrap().is_acked(),
            "enqueued before pika looks"
        );
        let q = queue.clone();
        let seen = tokio::task::spawn_blocking(move || python(PIKA_GET, &q))
            .await
            .unwrap();
        let expected = [
            "content_type str:text/plain",
            "content_encoding str:identity",
            "delivery_mode int:2",
            "priority int:3",
            "correlation_id str:c-9",
            "reply_to str:replies-q",
            "expiration str:120000",
            "message_id str:m-9",
            "timestamp int:1700000123",
            "type str:greeting",
            "user_id str:guest",
            "app_id str:amqp-client",
            "cluster_id str:c9",
            "header big long:1099511627776",
            "header i int:42",
            "header list [int:1,str:two]",
            "header nested {k=str:v}",
            "header s str:text",
            "header t bool:True",
        ];
        let lines: Vec<&str> = seen.lines().collect();
        for want in &expected {
            assert!(
                lines.contains(want),
                "pika did not see {want:?}; it saw:\n{seen}"
            );
        }
        assert!(lines.contains(&"body 006279746573ff"), "{seen}");

        // pika → this client.
        let q = queue.clone();
        tokio::task::spawn_blocking(move || python(PIKA_PUBLISH, &q))
            .await
            .unwrap();
        let got = loop {
            if let Some(m) = ch.basic_get(&queue, GetOptions::no_ack()).await.unwrap() {
                break m.delivery;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let p = &got.properties;
        assert_eq!(got.body, &b"\x01\x02hello"[..]);
        assert_eq!(p.content_type().unwrap(), "application/json");
        assert_eq!(p.content_encoding().unwrap(), "gzip");
        assert_eq!(p.delivery_mode(), Some(2));
        assert_eq!(p.priority(), Some(5));
        assert_eq!(p.correlation_id().unwrap(), "corr-1");
        assert_eq!(p.reply_to().unwrap(), "replies");
        assert_eq!(p.expiration().unwrap(), "60000");
        assert_eq!(p.message_id().unwrap(), "msg-1");
        assert_eq!(p.timestamp(), Some(1_700_000_000));
        assert_eq!(p.kind().unwrap(), "order.created");
        assert_eq!(p.user_id().unwrap(), "guest");
        assert_eq!(p.app_id().unwrap(), "pika-test");
        assert_eq!(p.cluster_id().unwrap(), "c1");
        let h = p.headers().unwrap();
        assert_eq!(
            h.get("s")
                .and_then(|v| v.as_str().map(str::to_owned))
                .as_deref(),
            Some("text")
        );
        assert_eq!(h.get("i").and_then(|v| v.as_i64()), Some(42));
        assert_eq!(h.get("big").and_then(|v| v.as_i64()), Some(1 << 40));
        assert_eq!(h.get("neg").and_then(|v| v.as_i64()), Some(-7));
        assert_eq!(h.get("t"), Some(FieldValue::Bool(true)));
        assert_eq!(h.get("f"), Some(FieldValue::Bool(false)));
        let Some(FieldValue::Table(nested)) = h.get("nested") else {
            panic!("nested table: {h:?}")
        };
        assert_eq!(
            nested
                .get("k")
                .and_then(|v| v.as_str().map(str::to_owned))
                .as_deref(),
            Some("v")
        );
        let Some(FieldValue::Array(list)) = h.get("list") else {
            panic!("array: {h:?}")
        };
        assert_eq!(list.iter().count(), 2);
        let raw = h.get("raw").expect("raw bytes header");
        assert!(
            matches!(raw, FieldValue::LongStr(ref b) if b.as_bytes() == b"\x00\xff")
                || matches!(raw, FieldValue::ByteArray(ref b) if &b[..] == b"\x00\xff"),
            "{raw:?}"
        );

        ch.queue_delete(&queue, QueueDeleteOptions::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await
    .expect("finished in time");
}
