//! Every method of the method table round-trips: `Method::encode` then `Method::decode` gives the
//! method back, `encoded_len` is the encoded length, and a method frame goes through
//! `Frame::encode` and `FrameDecoder` unchanged. The strategy covers all 66 methods (checked
//! against `METHODS`), with every field random; the bit packing and field layout are also checked
//! against payloads built by hand from the method table's metadata.

mod common;

use std::collections::BTreeSet;

use amqp_codec::methods::{
    AccessRequest, BasicNack, ExchangeDeclare, METHODS, MethodInfo, QueueDeclare,
};
use amqp_codec::{ClassId, DecodeError, FieldError, Frame, FrameDecoder, Method, ShortStr};
use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use common::{any_method, method_variants};

fn encode(m: &Method) -> Bytes {
    let mut buf = BytesMut::new();
    m.encode(&mut buf);
    buf.freeze()
}

proptest! {
    #[test]
    fn method_payload_roundtrips(m in any_method()) {
        let payload = encode(&m);
        prop_assert_eq!(m.encoded_len(), payload.len());
        prop_assert_eq!(&payload[..2], &m.class_id().0.to_be_bytes()[..]);
        prop_assert_eq!(&payload[2..4], &m.method_id().to_be_bytes()[..]);
        prop_assert_eq!(Method::decode(&payload), Ok(m));
    }

    #[test]
    fn method_frame_roundtrips(m in any_method(), channel in any::<u16>()) {
        let frame = Frame::Method { channel, method: m.clone() };
        let mut wire = BytesMut::new();
        frame.encode(&mut wire).expect("a method fits a frame");
        prop_assert_eq!(wire.len(), frame.encoded_len());
        prop_assert_eq!(wire.len(), m.encoded_len() + 8);
        prop_assert_eq!(wire[0], 1);
        prop_assert_eq!(&wire[1..3], &channel.to_be_bytes()[..]);
        prop_assert_eq!(&wire[3..7], &(m.encoded_len() as u32).to_be_bytes()[..]);
        prop_assert_eq!(wire[wire.len() - 1], 0xCE);

        let mut decoder = FrameDecoder::with_frame_max(0);
        prop_assert_eq!(decoder.next_frame_len(&wire), Ok(Some(wire.len())));
        prop_assert_eq!(decoder.decode(&mut wire), Ok(Some(frame)));
        prop_assert!(wire.is_empty());
    }

    /// Any byte short is an error (never a panic, never a different method); a byte too many is
    /// `TrailingBytes`.
    #[test]
    fn truncated_or_padded_payloads_are_refused(m in any_method(), cut in any::<prop::sample::Index>()) {
        let payload = encode(&m);
        let short = payload.slice(..cut.index(payload.len()));
        prop_assert!(Method::decode(&short).is_err(), "decoded {} of {} bytes", short.len(), payload.len());

        let mut padded = BytesMut::from(&payload[..]);
        padded.put_u8(0);
        prop_assert_eq!(
            Method::decode(&padded.freeze()),
            Err(DecodeError::BadMethod {
                class_id: m.class_id(),
                method_id: m.method_id(),
                name: m.name(),
                source: FieldError::TrailingBytes { count: 1 },
            })
        );
    }
}

/// One value of each per-method strategy, from a deterministic runner.
fn one_of_each() -> Vec<Method> {
    let mut runner = TestRunner::deterministic();
    method_variants()
        .iter()
        .map(|s| s.new_tree(&mut runner).expect("a value").current())
        .collect()
}

#[test]
fn strategy_covers_every_method_in_table_order() {
    let generated = one_of_each();
    assert_eq!(generated.len(), METHODS.len());
    assert_eq!(METHODS.len(), 66);
    for (m, info) in generated.iter().zip(METHODS) {
        assert_eq!(
            (m.class_id(), m.method_id()),
            (info.class_id, info.method_id)
        );
        assert_eq!(m.name(), info.name);
    }
    let ids: BTreeSet<(ClassId, u16)> = generated
        .iter()
        .map(|m| (m.class_id(), m.method_id()))
        .collect();
    assert_eq!(ids.len(), 66, "every method once");
}

/// A payload built from the method table's metadata alone: numeric fields filled with `fill`,
/// strings of one byte, empty tables, every bit set to `bit`.
fn payload_from_metadata(info: &MethodInfo, fill: u8, bit: bool) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&info.class_id.0.to_be_bytes());
    p.extend_from_slice(&info.method_id.to_be_bytes());
    let mut bits_in_octet = 8;
    for field in info.fields {
        if field.spec_type == "bit" {
            if bits_in_octet == 8 {
                p.push(0);
                bits_in_octet = 0;
            }
            if bit {
                *p.last_mut().expect("bit octet") |= 1 << bits_in_octet;
            }
            bits_in_octet += 1;
            continue;
        }
        bits_in_octet = 8;
        match field.spec_type {
            "octet" => p.push(fill),
            "short" => p.extend_from_slice(&[fill; 2]),
            "long" => p.extend_from_slice(&[fill; 4]),
            "longlong" => p.extend_from_slice(&[fill; 8]),
            "shortstr" => p.extend_from_slice(&[1, fill]),
            "longstr" => p.extend_from_slice(&[0, 0, 0, 1, fill]),
            "table" => p.extend_from_slice(&[0, 0, 0, 0]),
            other => panic!("unknown spec type {other} in {}", info.name),
        }
    }
    p
}

#[test]
fn payloads_built_from_metadata_decode_and_reencode_byte_for_byte() {
    for info in METHODS {
        for (fill, bit) in [(0, false), (0xA5, true), (0xFF, true), (1, false)] {
            let payload = Bytes::from(payload_from_metadata(info, fill, bit));
            let m = Method::decode(&payload)
                .unwrap_or_else(|e| panic!("{}: {e} on {payload:02x?}", info.name));
            assert_eq!(m.name(), info.name);
            assert_eq!(m.encoded_len(), payload.len(), "{}", info.name);
            assert_eq!(encode(&m), payload, "{}", info.name);
        }
    }
}

#[test]
fn bits_pack_lsb_first_into_shared_octets() {
    let nack = Method::BasicNack(BasicNack {
        delivery_tag: 0x0102_0304_0506_0708,
        multiple: false,
        requeue: true,
    });
    assert_eq!(
        &encode(&nack)[..],
        &[0, 60, 0, 120, 1, 2, 3, 4, 5, 6, 7, 8, 0b10]
    );

    // Five bits in one octet, between a short string and a table.
    let declare = Method::ExchangeDeclare(ExchangeDeclare {
        ticket: 0,
        exchange: ShortStr::from_static("e"),
        kind: ShortStr::from_static("topic"),
        passive: true,
        durable: false,
        auto_delete: true,
        internal: false,
        nowait: true,
        arguments: Default::default(),
    });
    let mut expected = vec![0, 40, 0, 10, 0, 0, 1, b'e', 5];
    expected.extend_from_slice(b"topic");
    expected.extend_from_slice(&[0b10101, 0, 0, 0, 0]);
    assert_eq!(&encode(&declare)[..], &expected[..]);
    assert_eq!(Method::decode(&Bytes::from(expected)), Ok(declare));

    let declare = Method::QueueDeclare(QueueDeclare {
        nowait: true,
        ..Default::default()
    });
    assert_eq!(
        &encode(&declare)[..],
        &[0, 50, 0, 10, 0, 0, 0, 0b10000, 0, 0, 0, 0]
    );

    let request = Method::AccessRequest(AccessRequest {
        realm: ShortStr::from_static("/data"),
        exclusive: false,
        passive: false,
        active: false,
        write: false,
        read: true,
    });
    assert_eq!(
        &encode(&request)[..],
        &[0, 30, 0, 10, 5, b'/', b'd', b'a', b't', b'a', 0b10000]
    );
}

#[test]
fn unknown_and_short_methods_are_refused() {
    let unknown = Bytes::from_static(&[0, 60, 0, 41]);
    assert_eq!(
        Method::decode(&unknown),
        Err(DecodeError::UnknownMethod {
            class_id: ClassId::BASIC,
            method_id: 41
        })
    );
    for short in [&[][..], &[0], &[0, 60], &[0, 60, 0]] {
        assert!(matches!(
            Method::decode(&Bytes::copy_from_slice(short)),
            Err(DecodeError::FrameTooShort { .. })
        ));
    }
}
