//! Exchanges against the real broker at `AMQP_URL`: every kind and flag, passive declares,
//! redeclares, delete (with if-unused), internal and auto-delete exchanges, exchange-to-exchange
//! bindings, and routing by direct, topic and headers exchanges proven with messages.
//!
//! Every test uses unique names, is bounded in time, and deletes what it declared (through
//! `common::Cleanup`, also when it fails).

mod common;

use amqp_client::BindOptions;
use amqp_client::amqp_codec::table::FieldTable;
use amqp_client::amqp_codec::{BasicProperties, ReplyCode};
use amqp_client::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind, PublishOptions,
    QueueDeclareOptions,
};
use common::{
    Cleanup, LIMIT, assert_channel_closed, connect, drain, plain, publish_confirmed, within,
};

#[tokio::test]
async fn exchange_declare_every_kind_and_flag() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let kinds = [
            ExchangeKind::Direct,
            ExchangeKind::Fanout,
            ExchangeKind::Topic,
            ExchangeKind::Headers,
        ];
        let flag_sets = [
            ExchangeDeclareOptions::default(),
            ExchangeDeclareOptions::default().with_durable(),
            ExchangeDeclareOptions::default().with_auto_delete(),
            ExchangeDeclareOptions::default().with_internal(),
            ExchangeDeclareOptions::default()
                .with_durable()
                .with_auto_delete()
                .with_internal(),
        ];
        for kind in &kinds {
            for flags in flag_sets.clone() {
                let name = names.exchange(&format!("ex-{kind}"));
                ch.exchange_declare(&name, kind.clone(), flags.clone())
                    .await
                    .unwrap_or_else(|e| panic!("declare {kind} {flags:?}: {e}"));
                // Redeclaring with the same settings is a no-op; passive finds it.
                ch.exchange_declare(&name, kind.clone(), flags)
                    .await
                    .unwrap();
                let passive = ExchangeDeclareOptions::default().with_passive();
                ch.exchange_declare(&name, kind.clone(), passive)
                    .await
                    .unwrap();
                ch.exchange_delete(&name, ExchangeDeleteOptions::default())
                    .await
                    .unwrap();
            }
        }
        assert!(ch.is_open());
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn exchange_passive_missing_is_404_and_the_connection_lives_on() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let missing = names.exchange("ex-missing");
        let passive = ExchangeDeclareOptions::default().with_passive();
        let err = ch
            .exchange_declare(&missing, ExchangeKind::Direct, passive)
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);
        assert!(!ch.is_open());
        // Later calls on the closed channel fail with the same reason, at once.
        let again = ch
            .queue_declare("", QueueDeclareOptions::default())
            .await
            .unwrap_err();
        assert_channel_closed(&again, ReplyCode::NOT_FOUND);
        // The connection and a new channel work.
        assert!(conn.is_open());
        let ch2 = conn.open_channel().await.unwrap();
        let name = names.exchange("ex-after-404");
        ch2.exchange_declare(&name, ExchangeKind::Fanout, Default::default())
            .await
            .unwrap();
        ch2.exchange_delete(&name, Default::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn exchange_redeclare_with_another_kind_is_406() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let name = names.exchange("ex-kind");
        ch.exchange_declare(&name, ExchangeKind::Direct, Default::default())
            .await
            .unwrap();
        let err = ch
            .exchange_declare(&name, ExchangeKind::Fanout, Default::default())
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        let ch2 = conn.open_channel().await.unwrap();
        ch2.exchange_delete(&name, Default::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn exchange_delete_and_if_unused() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let ex = names.exchange("ex-del");
        let q = names.queue("q-ex-del");
        ch.exchange_declare(&ex, ExchangeKind::Direct, Default::default())
            .await
            .unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.queue_bind(&q, &ex, "k", BindOptions::default())
            .await
            .unwrap();
        // if-unused refuses an exchange with bindings.
        let err = ch
            .exchange_delete(&ex, ExchangeDeleteOptions::default().with_if_unused())
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        let ch = conn.open_channel().await.unwrap();
        ch.exchange_delete(&ex, ExchangeDeleteOptions::default())
            .await
            .unwrap();
        let passive = ExchangeDeclareOptions::default().with_passive();
        let err = ch
            .exchange_declare(&ex, ExchangeKind::Direct, passive.clone())
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);
        let ch = conn.open_channel().await.unwrap();
        // No-wait delete, then a synchronous call to be sure it was processed.
        let ex2 = names.exchange("ex-del-nowait");
        ch.exchange_declare(&ex2, ExchangeKind::Topic, Default::default())
            .await
            .unwrap();
        ch.exchange_delete(&ex2, ExchangeDeleteOptions::default().with_nowait())
            .await
            .unwrap();
        let err = ch
            .exchange_declare(&ex2, ExchangeKind::Topic, passive)
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);
        let ch = conn.open_channel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn internal_exchange_refuses_direct_publishes() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let ex = names.exchange("ex-internal");
        ch.exchange_declare(
            &ex,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default().with_internal(),
        )
        .await
        .unwrap();
        ch.confirm_select().await.unwrap();
        let confirm = ch
            .basic_publish(&ex, "", PublishOptions::default(), &Default::default(), "x")
            .await
            .unwrap();
        let err = confirm.await.unwrap_err();
        assert_channel_closed(&err, ReplyCode::ACCESS_REFUSED);
        let ch = conn.open_channel().await.unwrap();
        ch.exchange_delete(&ex, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let ex = names.exchange("ex-autodel");
        let q = names.queue("q-ex-autodel");
        ch.exchange_declare(
            &ex,
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default().with_auto_delete(),
        )
        .await
        .unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.queue_bind(&q, &ex, "k", BindOptions::default())
            .await
            .unwrap();
        ch.queue_unbind(&q, &ex, "k", BindOptions::default())
            .await
            .unwrap();
        let passive = ExchangeDeclareOptions::default().with_passive();
        let err = ch
            .exchange_declare(&ex, ExchangeKind::Direct, passive)
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);
        let ch = conn.open_channel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn exchange_to_exchange_bind_routes_and_unbind_stops() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let source = names.exchange("e2e-src");
        let dest = names.exchange("e2e-dst");
        let q = names.queue("e2e-q");
        ch.exchange_declare(&source, ExchangeKind::Direct, Default::default())
            .await
            .unwrap();
        ch.exchange_declare(&dest, ExchangeKind::Fanout, Default::default())
            .await
            .unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.queue_bind(&q, &dest, "", BindOptions::default())
            .await
            .unwrap();
        ch.exchange_bind(&dest, &source, "k", BindOptions::default())
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();

        assert!(
            publish_confirmed(&ch, &source, "k", "through")
                .await
                .is_acked()
        );
        assert!(
            publish_confirmed(&ch, &source, "other", "dropped")
                .await
                .is_acked()
        );
        assert_eq!(drain(&ch, &q).await, ["through"]);

        ch.exchange_unbind(&dest, &source, "k", BindOptions::default())
            .await
            .unwrap();
        assert!(
            publish_confirmed(&ch, &source, "k", "after unbind")
                .await
                .is_acked()
        );
        assert_eq!(drain(&ch, &q).await, Vec::<String>::new());

        ch.queue_delete(&q, Default::default()).await.unwrap();
        ch.exchange_delete(&source, Default::default())
            .await
            .unwrap();
        ch.exchange_delete(&dest, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn routing_by_kind_direct_topic_headers() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        ch.confirm_select().await.unwrap();
        // Topic: * is one word, # any number.
        let topic = names.exchange("route-topic");
        let q = names.queue("route-topic-q");
        ch.exchange_declare(&topic, ExchangeKind::Topic, Default::default())
            .await
            .unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.queue_bind(&q, &topic, "*.orange.*", BindOptions::default())
            .await
            .unwrap();
        ch.queue_bind(&q, &topic, "lazy.#", BindOptions::default())
            .await
            .unwrap();
        for key in [
            "quick.orange.rabbit",
            "lazy.brown.fox",
            "quick.brown.fox",
            "lazy",
            "a.orange",
        ] {
            publish_confirmed(&ch, &topic, key, key).await;
        }
        assert_eq!(
            drain(&ch, &q).await,
            ["quick.orange.rabbit", "lazy.brown.fox", "lazy"]
        );
        // Headers: x-match all / any.
        let headers = names.exchange("route-headers");
        let qh = names.queue("route-headers-q");
        ch.exchange_declare(&headers, ExchangeKind::Headers, Default::default())
            .await
            .unwrap();
        ch.queue_declare(&qh, plain()).await.unwrap();
        let bind_args = FieldTable::builder()
            .insert("x-match", "all")
            .insert("format", "pdf")
            .insert("type", "report")
            .build()
            .unwrap();
        ch.queue_bind(
            &qh,
            &headers,
            "",
            BindOptions::default().with_arguments(bind_args),
        )
        .await
        .unwrap();
        for (name, format) in [("match", "pdf"), ("nomatch", "zip")] {
            let h = FieldTable::builder()
                .insert("format", format)
                .insert("type", "report")
                .build()
                .unwrap();
            let props = BasicProperties::builder().with_headers(h).build().unwrap();
            ch.basic_publish(&headers, "", PublishOptions::default(), &props, name)
                .await
                .unwrap()
                .await
                .unwrap();
        }
        assert_eq!(drain(&ch, &qh).await, ["match"]);
        ch.queue_delete(&q, Default::default()).await.unwrap();
        ch.queue_delete(&qh, Default::default()).await.unwrap();
        ch.exchange_delete(&topic, Default::default())
            .await
            .unwrap();
        ch.exchange_delete(&headers, Default::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await;
}
