//! The reliable publisher's rules, without a broker: what settles a message, what sends it
//! again, and when it gives up. (`amqp-client/tests/reliable_publisher.rs` proves them against
//! the real broker, with connections killed mid-run.)

use amqp_codec::{BasicProperties, ReplyCode, ShortStr};

use super::tracker::{Next, after_confirm, after_error};
use super::{PublishFailure, PublisherConfig};
use crate::error::{CloseReason, Error};
use crate::proto::{Confirmation, ReturnedMessage};

fn returned() -> Box<ReturnedMessage> {
    Box::new(ReturnedMessage {
        reply_code: ReplyCode::NO_ROUTE,
        reply_text: ShortStr::from_static("NO_ROUTE"),
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("nowhere"),
        properties: BasicProperties::default(),
        body: bytes::Bytes::new(),
        content_dropped: None,
    })
}

fn channel_closed(code: ReplyCode) -> Error {
    Error::ChannelClosed(CloseReason {
        code,
        text: "NOT_FOUND - no exchange 'x'".into(),
        class_id: amqp_codec::ClassId(60),
        method_id: 40,
    })
}

fn settled(next: Next) -> Result<(), PublishFailure> {
    match next {
        Next::Settle(outcome) => outcome,
        Next::Resend => panic!("expected the message settled, got a resend"),
    }
}

#[test]
fn an_ack_settles_and_a_return_is_unroutable_without_retry() {
    let config = PublisherConfig::default();
    let mut refusals = 0;
    assert!(
        settled(after_confirm(
            &config,
            true,
            &mut refusals,
            Ok(Confirmation::Acked)
        ))
        .is_ok()
    );
    for outcome in [
        Confirmation::Returned(returned()),
        Confirmation::Nacked(Some(returned())),
    ] {
        let failure = settled(after_confirm(&config, true, &mut refusals, Ok(outcome)));
        assert!(
            matches!(
                failure,
                Err(PublishFailure::Unroutable {
                    reply_code: 312,
                    ..
                })
            ),
            "{failure:?}"
        );
    }
    assert_eq!(refusals, 0);
}

#[test]
fn nacks_are_retried_until_the_refusals_run_out() {
    let config = PublisherConfig::default().with_max_refusals(2);
    let mut refusals = 0;
    for _ in 0..2 {
        let next = after_confirm(&config, true, &mut refusals, Ok(Confirmation::Nacked(None)));
        assert!(matches!(next, Next::Resend), "{next:?}");
    }
    let failure = settled(after_confirm(
        &config,
        true,
        &mut refusals,
        Ok(Confirmation::Nacked(None)),
    ));
    assert!(
        matches!(
            failure,
            Err(PublishFailure::RetriesExhausted {
                refusals: 3,
                last_error: None
            })
        ),
        "{failure:?}"
    );
}

#[test]
fn a_channel_error_is_a_refusal_that_keeps_its_reason() {
    let config = PublisherConfig::default().with_max_refusals(0);
    let mut refusals = 0;
    let failure = settled(after_error(
        &config,
        true,
        &mut refusals,
        channel_closed(ReplyCode::NOT_FOUND),
    ));
    let Err(PublishFailure::RetriesExhausted {
        refusals: 1,
        last_error: Some(err),
    }) = failure
    else {
        panic!("{failure:?}")
    };
    assert_eq!(err.reply_code(), Some(ReplyCode::NOT_FOUND));
}

#[test]
fn a_lost_connection_is_sent_again_only_when_recovery_brings_it_back() {
    let mut refusals = 0;
    let on = PublisherConfig::default();
    for err in [Error::ConnectionLost, Error::Recovering] {
        let next = after_error(&on, true, &mut refusals, err);
        assert!(matches!(next, Next::Resend), "{next:?}");
    }
    assert_eq!(refusals, 0, "a loss is not the broker refusing the message");
    // Without recovery, or with republishing turned off, the loss is final.
    let failure = settled(after_error(
        &on,
        false,
        &mut refusals,
        Error::ConnectionLost,
    ));
    assert!(matches!(
        failure,
        Err(PublishFailure::Failed(Error::ConnectionLost))
    ));
    let off = PublisherConfig::default().with_republish_after_loss(false);
    let failure = settled(after_error(
        &off,
        true,
        &mut refusals,
        Error::ConnectionLost,
    ));
    assert!(matches!(failure, Err(PublishFailure::Failed(_))));
}

#[test]
fn what_no_retry_can_fix_fails_at_once() {
    let config = PublisherConfig::default();
    let mut refusals = 0;
    for err in [
        Error::ConnectionClosedByApp,
        Error::ChannelClosedByApp,
        Error::RecoveryFailed {
            attempts: 3,
            last_error: Box::new(Error::ConnectionLost),
        },
    ] {
        let failure = settled(after_error(&config, true, &mut refusals, err));
        assert!(
            matches!(failure, Err(PublishFailure::Failed(_))),
            "{failure:?}"
        );
    }
}

#[test]
fn failures_read_as_sentences() {
    let failure = PublishFailure::RetriesExhausted {
        refusals: 6,
        last_error: Some(channel_closed(ReplyCode::NOT_FOUND)),
    };
    let text = failure.to_string();
    assert!(
        text.starts_with("the broker refused the message 6 times (last: "),
        "{text}"
    );
    let unroutable = PublishFailure::Unroutable {
        reply_code: 312,
        reply_text: "NO_ROUTE".into(),
    };
    assert_eq!(
        unroutable.to_string(),
        "the message was returned as unroutable (312 NO_ROUTE)"
    );
}
