//! Content headers and basic's 14 properties: any combination of present properties encodes as a
//! hand-written reference encoder says (flags word, then the present properties in order) and
//! decodes back, alone and framed, with every getter of the decoded (wire-form) properties
//! returning the field that was built. The flag bits are checked on hand-built bytes, one property at
//! a time (content-type bit 15 down to cluster-id bit 2), as are continuation words, the unused
//! bit, other classes, truncation and trailing bytes.

mod common;

use amqp_codec::{
    ClassId, ContentHeader, DecodeError, FieldError, FieldTable, Frame, FrameDecoder,
    PropertiesBuilder, ShortStr,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use common::{properties, property_fields};

/// One property in wire order, for the reference encoder.
enum Prop<'a> {
    Short(&'a Option<ShortStr>),
    Table(&'a Option<FieldTable>),
    Octet(Option<u8>),
    LongLong(Option<u64>),
}

/// Reference encoding: the flags word (property `i` at bit `15 - i`), then each present property.
fn ref_properties(p: &PropertiesBuilder) -> Vec<u8> {
    let props = [
        Prop::Short(&p.content_type),
        Prop::Short(&p.content_encoding),
        Prop::Table(&p.headers),
        Prop::Octet(p.delivery_mode),
        Prop::Octet(p.priority),
        Prop::Short(&p.correlation_id),
        Prop::Short(&p.reply_to),
        Prop::Short(&p.expiration),
        Prop::Short(&p.message_id),
        Prop::LongLong(p.timestamp),
        Prop::Short(&p.kind),
        Prop::Short(&p.user_id),
        Prop::Short(&p.app_id),
        Prop::Short(&p.cluster_id),
    ];
    let mut flags = 0u16;
    let mut values = Vec::new();
    for (i, prop) in props.iter().enumerate() {
        let value: Option<Vec<u8>> = match prop {
            Prop::Short(s) => s.as_ref().map(|s| [&[s.len() as u8][..], s].concat()),
            Prop::Table(t) => t.as_ref().map(|t| {
                let raw = t.as_raw();
                [&(raw.len() as u32).to_be_bytes()[..], raw].concat()
            }),
            Prop::Octet(v) => v.map(|v| vec![v]),
            Prop::LongLong(v) => v.map(|v| v.to_be_bytes().to_vec()),
        };
        if let Some(value) = value {
            flags |= 1 << (15 - i);
            values.extend_from_slice(&value);
        }
    }
    let mut out = flags.to_be_bytes().to_vec();
    out.extend_from_slice(&values);
    out
}

/// A basic content header payload: class 60, weight 0, body size 7, then `props`.
fn header_payload(props: &[u8]) -> Bytes {
    let mut p = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    p.extend_from_slice(props);
    Bytes::from(p)
}

fn bad(source: FieldError) -> Result<ContentHeader, DecodeError> {
    Err(DecodeError::BadContentHeader {
        channel: 0,
        body_size: 7,
        source,
    })
}

proptest! {
    #[test]
    fn headers_encode_as_the_reference_and_roundtrip(
        fields in property_fields(),
        body_size in any::<u64>(),
        weight in any::<u16>(),
        channel in any::<u16>(),
    ) {
        let properties = fields.build().unwrap();
        prop_assert_eq!(&properties.to_builder(), &fields, "getters read back what was built");
        let header = ContentHeader { class_id: ClassId::BASIC, weight, body_size, properties };
        let mut payload = BytesMut::new();
        header.encode(&mut payload);
        let mut expected = vec![0, 60];
        expected.extend_from_slice(&weight.to_be_bytes());
        expected.extend_from_slice(&body_size.to_be_bytes());
        let reference = ref_properties(&fields);
        expected.extend_from_slice(&reference);
        prop_assert_eq!(&payload[..], &expected[..]);
        prop_assert_eq!(header.encoded_len(), payload.len());
        prop_assert_eq!(header.properties.encoded_len(), reference.len());
        prop_assert_eq!(&header.properties.flags().to_be_bytes()[..], &reference[..2]);
        prop_assert_eq!(header.properties.flags() & 0b11, 0, "no continuation, no unused bit");
        let decoded = ContentHeader::decode(&payload.freeze()).expect("valid");
        prop_assert_eq!(&decoded, &header);
        prop_assert_eq!(&decoded.properties.to_builder(), &fields, "getters on decoded bytes");

        let frame = Frame::Header { channel, header };
        let mut wire = BytesMut::new();
        frame.encode(&mut wire).expect("encodes");
        prop_assert_eq!(wire.len(), frame.encoded_len());
        prop_assert_eq!(wire[0], 2);
        prop_assert_eq!(FrameDecoder::with_frame_max(0).decode(&mut wire), Ok(Some(frame)));
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn every_proper_prefix_is_refused(properties in properties()) {
        let mut payload = BytesMut::new();
        ContentHeader::basic(1, properties).encode(&mut payload);
        let payload = payload.freeze();
        for cut in 0..payload.len() {
            let got = ContentHeader::decode(&payload.slice(..cut));
            let expected_kind = if cut < 12 {
                matches!(got, Err(DecodeError::FrameTooShort { .. }))
            } else {
                matches!(got, Err(DecodeError::BadContentHeader { source: FieldError::Truncated { .. }, .. }))
            };
            prop_assert!(expected_kind, "cut at {}: {:?}", cut, got);
        }
    }
}

#[test]
fn each_flag_bit_names_its_property() {
    let s = |v: &'static str| Some(ShortStr::from_static(v));
    let table: FieldTable = FieldTable::builder()
        .insert("a", 1u8)
        .build()
        .expect("valid");
    #[rustfmt::skip]
    let cases: [(u16, &[u8], PropertiesBuilder); 14] = [
        (15, b"\x03a/b", {
            let mut b = PropertiesBuilder::default();
            b.content_type = s("a/b");
            b
        }),
        (14, b"\x04gzip", {
            let mut b = PropertiesBuilder::default();
            b.content_encoding = s("gzip");
            b
        }),
        (13, b"\x00\x00\x00\x04\x01aB\x01", PropertiesBuilder::default().with_headers(table)),
        (12, b"\x02", PropertiesBuilder::default().persistent()),
        (11, b"\x09", PropertiesBuilder::default().with_priority(9)),
        (10, b"\x03c-1", {
            let mut b = PropertiesBuilder::default();
            b.correlation_id = s("c-1");
            b
        }),
        (9, b"\x02rq", {
            let mut b = PropertiesBuilder::default();
            b.reply_to = s("rq");
            b
        }),
        (8, b"\x0560000", {
            let mut b = PropertiesBuilder::default();
            b.expiration = s("60000");
            b
        }),
        (7, b"\x02m1", {
            let mut b = PropertiesBuilder::default();
            b.message_id = s("m1");
            b
        }),
        (6, b"\x01\x02\x03\x04\x05\x06\x07\x08", PropertiesBuilder::default().with_timestamp(0x0102_0304_0506_0708)),
        (5, b"\x04kind", {
            let mut b = PropertiesBuilder::default();
            b.kind = s("kind");
            b
        }),
        (4, b"\x05guest", {
            let mut b = PropertiesBuilder::default();
            b.user_id = s("guest");
            b
        }),
        (3, b"\x03app", {
            let mut b = PropertiesBuilder::default();
            b.app_id = s("app");
            b
        }),
        (2, b"\x02c9", {
            let mut b = PropertiesBuilder::default();
            b.cluster_id = s("c9");
            b
        }),
    ];
    let mut all_flags = Vec::new();
    let mut all_values = Vec::new();
    let mut all = PropertiesBuilder::default();
    for (bit, value, expected) in cases {
        let mut props = (1u16 << bit).to_be_bytes().to_vec();
        props.extend_from_slice(value);
        let decoded = ContentHeader::decode(&header_payload(&props)).expect("valid");
        assert_eq!(
            decoded.properties.to_builder(),
            expected,
            "bit {bit}: getters"
        );
        assert_eq!(decoded.properties, expected.build().unwrap(), "bit {bit}");
        assert_eq!(expected.build().unwrap().flags(), 1 << bit);
        assert_eq!(ref_properties(&expected), props);
        all_flags.push(1u16 << bit);
        all_values.extend_from_slice(value);
        merge(&mut all, expected);
    }
    // All 14 at once: flags 0xFFFC, values in bit order.
    let flags: u16 = all_flags.iter().sum();
    assert_eq!(flags, 0xFFFC);
    let mut props = flags.to_be_bytes().to_vec();
    props.extend_from_slice(&all_values);
    let decoded = ContentHeader::decode(&header_payload(&props)).expect("valid");
    assert_eq!(decoded.properties.to_builder(), all);
    assert_eq!(decoded.properties, all.build().unwrap());
    let mut encoded = BytesMut::new();
    decoded.encode(&mut encoded);
    assert_eq!(&encoded[..], &header_payload(&props)[..]);
}

/// Copies the present fields of `from` into `into`.
fn merge(into: &mut PropertiesBuilder, from: PropertiesBuilder) {
    macro_rules! take {
        ($($f:ident),*) => {$( if from.$f.is_some() { into.$f = from.$f; } )*};
    }
    take!(
        content_type,
        content_encoding,
        headers,
        delivery_mode,
        priority,
        correlation_id,
        reply_to,
        expiration,
        message_id,
        timestamp,
        kind,
        user_id,
        app_id,
        cluster_id
    );
}

#[test]
fn continuation_words_are_followed_and_checked() {
    // delivery-mode + continuation, then empty words, then the value.
    for words in [
        &[0x10, 0x01, 0, 0][..],
        &[0x10, 0x01, 0, 0x01, 0, 0x01, 0, 0],
    ] {
        let mut props = words.to_vec();
        props.push(2);
        let h = ContentHeader::decode(&header_payload(&props)).expect("valid");
        assert_eq!(h.properties.delivery_mode(), Some(2));
        assert_eq!(h.properties.flags(), 0x1000);
    }
    // A continuation word naming a property basic does not have.
    assert_eq!(
        ContentHeader::decode(&header_payload(&[0x10, 0x01, 0x40, 0x01, 0, 0, 2])),
        bad(FieldError::UnknownProperties { flags: 0x4000 })
    );
    // The continuation bit with no word after it.
    assert_eq!(
        ContentHeader::decode(&header_payload(&[0x00, 0x01])),
        bad(FieldError::Truncated { what: "short" })
    );
    assert_eq!(
        ContentHeader::decode(&header_payload(&[0x00, 0x01, 0x00])),
        bad(FieldError::Truncated { what: "short" })
    );
    // Bit 1 names no property.
    assert_eq!(
        ContentHeader::decode(&header_payload(&[0x00, 0x02])),
        bad(FieldError::UnknownProperties { flags: 0x0002 })
    );
}

#[test]
fn malformed_headers_are_refused() {
    // No property flags at all.
    assert_eq!(
        ContentHeader::decode(&header_payload(&[])),
        bad(FieldError::Truncated { what: "short" })
    );
    // A flag set with its property missing, and a byte after the last property.
    assert_eq!(
        ContentHeader::decode(&header_payload(&[0x80, 0x00])),
        bad(FieldError::Truncated {
            what: "short string"
        })
    );
    assert_eq!(
        ContentHeader::decode(&header_payload(&[0x08, 0x00, 0, 9])),
        bad(FieldError::TrailingBytes { count: 1 })
    );
    // Only basic carries content.
    let other = Bytes::from_static(&[0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        ContentHeader::decode(&other),
        Err(DecodeError::UnknownContentClass {
            class_id: ClassId::QUEUE
        })
    );
    // A headers table that is itself malformed.
    assert_eq!(
        ContentHeader::decode(&header_payload(&[0x20, 0, 0, 0, 0, 3, 1, b'k', b'Z'])),
        bad(FieldError::UnknownFieldType { letter: b'Z' })
    );
}
