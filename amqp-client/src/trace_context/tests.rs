//! `traceparent` by the W3C Trace Context examples and rules, valid and invalid; injection
//! into and extraction from header tables and properties; `child`.

use amqp_codec::{BasicProperties, FieldTable, FieldValue};

use super::{TRACEPARENT, TRACESTATE, TraceContext, TraceContextError};

/// The spec's example.
const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The spec's `tracestate` example.
const STATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

fn parse(s: &str) -> Result<TraceContext, TraceContextError> {
    TraceContext::parse(s)
}

#[test]
fn the_spec_examples_parse_and_print_back() {
    let ctx = parse(EXAMPLE).expect("valid");
    assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ctx.parent_id_hex(), "00f067aa0ba902b7");
    assert_eq!(
        ctx.parent_id(),
        [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
    );
    assert_eq!(ctx.flags(), 1);
    assert!(ctx.sampled());
    assert_eq!(ctx.to_string(), EXAMPLE);
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let ctx: TraceContext = unsampled.parse().expect("valid");
    assert!(!ctx.sampled());
    assert_eq!(ctx.to_string(), unsampled);
    // Flags other than sampled are kept as they came.
    assert_eq!(
        parse(&EXAMPLE.replace("-01", "-09")).map(|c| c.flags()),
        Ok(9)
    );
    // Spaces and tabs around the value are ignored.
    assert_eq!(parse(&format!(" \t{EXAMPLE} ")), parse(EXAMPLE));
}

#[test]
fn invalid_values_are_refused_with_the_reason() {
    let cases: &[(&str, TraceContextError)] = &[
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            TraceContextError::TraceId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            TraceContextError::ParentId,
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TraceContextError::Version,
        ),
        (
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TraceContextError::Version,
        ),
        // Uppercase hex is not lowercase hex.
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            TraceContextError::TraceId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            TraceContextError::ParentId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            TraceContextError::Flags,
        ),
        (
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TraceContextError::Separator,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7-01",
            TraceContextError::Separator,
        ),
        // Too short, or version 00 with more after the flags.
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            TraceContextError::Length(54),
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            TraceContextError::Length(56),
        ),
        ("", TraceContextError::Length(0)),
        // A later version may go on, but only after a '-'.
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what",
            TraceContextError::Length(60),
        ),
    ];
    for (value, reason) in cases {
        assert_eq!(parse(value), Err(*reason), "{value:?}");
    }
    assert!(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é1").is_err());
}

#[test]
fn a_later_version_is_read_by_the_version_00_rules_and_sent_on_as_00() {
    let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
    let ctx = parse(future).expect("valid");
    assert_eq!(ctx.to_string(), EXAMPLE);
    let exact = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(parse(exact).map(|c| c.to_string()), Ok(EXAMPLE.to_owned()));
}

#[test]
fn a_child_keeps_the_trace_and_gets_a_new_parent() {
    let ctx = parse(EXAMPLE).expect("valid").with_tracestate(STATE);
    let child = ctx.child();
    assert_eq!(child.trace_id(), ctx.trace_id());
    assert_ne!(child.parent_id(), ctx.parent_id());
    assert_ne!(child.parent_id(), [0; 8]);
    assert_eq!(child.flags(), ctx.flags());
    assert_eq!(child.tracestate(), Some(STATE));
    let root = TraceContext::new_root(false);
    assert!(!root.sampled());
    assert_ne!(root.trace_id(), [0; 16]);
    assert_ne!(TraceContext::new_root(true).trace_id(), root.trace_id());
    assert_eq!(TraceContext::from_parts([0; 16], [1; 8], 1), None);
    assert_eq!(TraceContext::from_parts([1; 16], [0; 8], 1), None);
    let parts = TraceContext::from_parts(ctx.trace_id(), ctx.parent_id(), 1);
    assert_eq!(parts.map(|c| c.to_string()), Some(EXAMPLE.to_owned()));
}

#[test]
fn inject_and_extract_round_trip_through_headers_and_properties() {
    let ctx = parse(EXAMPLE).expect("valid").with_tracestate(STATE);
    let mut headers = FieldTable::builder()
        .insert("tenant", "acme")
        .insert(
            TRACEPARENT,
            "00-11111111111111111111111111111111-2222222222222222-00",
        )
        .build()
        .expect("a table");
    ctx.inject(&mut headers);
    assert_eq!(
        headers
            .get(TRACEPARENT)
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref(),
        Some(EXAMPLE)
    );
    assert_eq!(
        headers
            .get("tenant")
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref(),
        Some("acme")
    );
    assert_eq!(TraceContext::extract(&headers), Some(ctx.clone()));
    // Without a tracestate, a stale one goes.
    let bare = ctx.child().with_tracestate("");
    bare.inject(&mut headers);
    assert!(!headers.contains_key(TRACESTATE));
    assert_eq!(TraceContext::extract(&headers), Some(bare));

    let props = ctx
        .inject_properties(&BasicProperties::persistent())
        .expect("props");
    assert_eq!(props.delivery_mode(), Some(BasicProperties::PERSISTENT));
    assert_eq!(TraceContext::from_properties(&props), Some(ctx));
    assert_eq!(
        TraceContext::from_properties(&BasicProperties::default()),
        None
    );
}

#[test]
fn an_invalid_or_absent_traceparent_extracts_nothing() {
    assert_eq!(TraceContext::extract(&FieldTable::default()), None);
    let mut headers = FieldTable::default();
    headers.insert(
        TRACEPARENT,
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    );
    headers.insert(TRACESTATE, STATE);
    assert_eq!(TraceContext::extract(&headers), None);
    // Not a string at all.
    headers.insert(TRACEPARENT, 42);
    assert_eq!(TraceContext::extract(&headers), None);
    // A byte array holding the text is read as the text.
    headers.insert(
        TRACEPARENT,
        FieldValue::ByteArray(EXAMPLE.as_bytes().to_vec().into()),
    );
    let ctx = TraceContext::extract(&headers).expect("read from bytes");
    assert_eq!(
        (ctx.to_string().as_str(), ctx.tracestate()),
        (EXAMPLE, Some(STATE))
    );
}
