//! Hand-written decoders for the methods a client receives once per message: `basic.deliver`
//! (consumers) and `basic.ack` / `basic.nack` (publisher confirms).
//!
//! The generated decoders read field by field through the nom [`crate::wire::Reader`], which
//! takes a reference count for every string it hands out and keeps the payload alive besides.
//! Here the layout is checked over the byte slice first, then the strings are cut from the
//! payload, the last one being the payload itself, advanced: three reference counts for a
//! delivery's three strings instead of four increments and a decrement, and about a third of
//! the instructions (see `benches/callgrind`).
//!
//! Anything these decoders do not accept exactly (short, long, or another method) goes back to
//! the generated decoder, which then reports the precise error: the fast path never decides
//! what is malformed, so both paths cannot disagree on errors.

use bytes::{Buf, Bytes};

use super::{BasicAck, BasicDeliver, BasicNack, Method};
use crate::strings::ShortStr;

/// Decodes `payload` if it is one of the methods above and well formed; otherwise hands it
/// back for the generated decoder.
// Inlined into the frame decoder so that the method is built in the frame it returns, not
// built here and copied there (144 bytes, once per delivery).
#[inline(always)]
pub(crate) fn decode(payload: Bytes) -> Result<Method, Bytes> {
    match payload.first_chunk::<4>() {
        Some([0, 60, 0, 60]) => deliver(payload).map(Method::BasicDeliver),
        Some([0, 60, 0, 80]) => match tag_and_bits(&payload) {
            Some((delivery_tag, bits)) => Ok(Method::BasicAck(BasicAck {
                delivery_tag,
                multiple: bits & 1 != 0,
            })),
            None => Err(payload),
        },
        Some([0, 60, 0, 120]) => match tag_and_bits(&payload) {
            Some((delivery_tag, bits)) => Ok(Method::BasicNack(BasicNack {
                delivery_tag,
                multiple: bits & 1 != 0,
                requeue: bits & 2 != 0,
            })),
            None => Err(payload),
        },
        _ => Err(payload),
    }
}

/// `delivery-tag` (longlong) and one octet of bits, and nothing else, after the method ids.
fn tag_and_bits(payload: &[u8]) -> Option<(u64, u8)> {
    match payload {
        &[_, _, _, _, t0, t1, t2, t3, t4, t5, t6, t7, bits] => {
            Some((u64::from_be_bytes([t0, t1, t2, t3, t4, t5, t6, t7]), bits))
        }
        _ => None,
    }
}

/// Where a delivery's fields are in its payload.
struct DeliverLayout {
    /// End of `consumer-tag` (which starts at 5, after the ids and its length octet).
    consumer_tag_end: usize,
    delivery_tag: u64,
    redelivered: bool,
    /// `exchange`'s bytes.
    exchange: (usize, usize),
    /// Start of `routing-key`, which runs to the end of the payload.
    routing_key: usize,
}

/// Checks a delivery's layout: `consumer-tag` (shortstr), `delivery-tag` (longlong),
/// `redelivered` (bit), `exchange` (shortstr), `routing-key` (shortstr), then nothing.
#[inline]
fn deliver_layout(p: &[u8]) -> Option<DeliverLayout> {
    let consumer_tag_end = 5 + usize::from(*p.get(4)?);
    let fixed = p.get(consumer_tag_end..)?.first_chunk::<10>()?;
    let [t0, t1, t2, t3, t4, t5, t6, t7, bits, exchange_len] = *fixed;
    let exchange_start = consumer_tag_end + 10;
    let exchange_end = exchange_start + usize::from(exchange_len);
    let routing_key = exchange_end + 1;
    // The routing key's length octet must account for exactly the rest of the payload.
    if p.len().checked_sub(routing_key)? != usize::from(*p.get(exchange_end)?) {
        return None;
    }
    Some(DeliverLayout {
        consumer_tag_end,
        delivery_tag: u64::from_be_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
        // A run of bits starts a new octet, LSB first; the other bits are not read.
        redelivered: bits & 1 != 0,
        exchange: (exchange_start, exchange_end),
        routing_key,
    })
}

#[inline(always)]
fn deliver(mut payload: Bytes) -> Result<BasicDeliver, Bytes> {
    let Some(at) = deliver_layout(&payload) else {
        return Err(payload);
    };
    let consumer_tag = ShortStr::from_wire(payload.slice(5..at.consumer_tag_end));
    let exchange = ShortStr::from_wire(payload.slice(at.exchange.0..at.exchange.1));
    payload.advance(at.routing_key);
    Ok(BasicDeliver {
        consumer_tag,
        delivery_tag: at.delivery_tag,
        redelivered: at.redelivered,
        exchange,
        routing_key: ShortStr::from_wire(payload),
    })
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn encoded(method: &Method) -> Vec<u8> {
        let mut buf = BytesMut::new();
        method.encode(&mut buf);
        buf.to_vec()
    }

    /// Both paths on `payload`: same method, or same error.
    fn same_as_generated(payload: &[u8]) {
        let payload = Bytes::copy_from_slice(payload);
        assert_eq!(
            Method::decode_owned(payload.clone()),
            Method::decode_generated(&payload),
            "{payload:?}"
        );
    }

    #[test]
    fn fast_and_generated_decoders_agree() {
        let deliver = Method::BasicDeliver(BasicDeliver {
            consumer_tag: ShortStr::from_static("ctag"),
            delivery_tag: 0x0102_0304_0506_0708,
            redelivered: true,
            exchange: ShortStr::from_static("ex"),
            routing_key: ShortStr::from_static("rk.1"),
        });
        let empty_strings = Method::BasicDeliver(BasicDeliver::default());
        let ack = Method::BasicAck(BasicAck {
            delivery_tag: 9,
            multiple: true,
        });
        let nack = Method::BasicNack(BasicNack {
            delivery_tag: 9,
            multiple: false,
            requeue: true,
        });
        for method in [deliver, empty_strings, ack, nack] {
            let wire = encoded(&method);
            assert_eq!(
                Method::decode_owned(Bytes::from(wire.clone())),
                Ok(method.clone())
            );
            // Every truncation, and one or two bytes too many.
            for len in 0..wire.len() {
                same_as_generated(&wire[..len]);
            }
            for extra in [&[0u8][..], &[1, 2]] {
                same_as_generated(&[&wire[..], extra].concat());
            }
            // Every value of every octet, one octet at a time (lengths, bits, tags).
            for at in 4..wire.len() {
                for v in 0..=255 {
                    let mut changed = wire.clone();
                    changed[at] = v;
                    same_as_generated(&changed);
                }
            }
        }
    }

    #[test]
    fn the_routing_key_is_the_payload_itself() {
        let wire = Bytes::from(encoded(&Method::BasicDeliver(BasicDeliver {
            routing_key: ShortStr::from_static("rk"),
            ..Default::default()
        })));
        let Ok(Method::BasicDeliver(d)) = Method::decode_owned(wire.clone()) else {
            panic!("a delivery");
        };
        assert_eq!(d.routing_key, "rk");
        assert_eq!(d.routing_key.as_ptr(), wire[wire.len() - 2..].as_ptr());
    }
}
