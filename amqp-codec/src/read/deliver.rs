//! The methods a client receives once per message: `basic.deliver` (consumers) and `basic.ack`
//! / `basic.nack` (publisher confirms), read straight from the payload's bytes.
//!
//! The generated decoders ([`super::args`]) read any method field by field and hand out shared
//! strings as they go; these read the whole argument list at once and borrow it, so a delivery
//! read in place ([`crate::DeliveryRef`]) takes no reference count, and one decoded into a
//! [`crate::methods::BasicDeliver`] takes one per string it keeps. Anything they do not accept
//! exactly (another method, a truncation, a trailing byte) goes to the generated decoder, which
//! then reports the precise error: this path never decides what is malformed, so the two
//! cannot disagree on errors.

use nom::Parser;

use super::{PResult, longlong, octet, short_str};
use crate::methods::{BasicAck, BasicNack};

/// basic.deliver's arguments, borrowed from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliverArgs<'a> {
    pub(crate) consumer_tag: &'a [u8],
    pub(crate) delivery_tag: u64,
    pub(crate) redelivered: bool,
    pub(crate) exchange: &'a [u8],
    pub(crate) routing_key: &'a [u8],
}

/// A method this module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hot<'a> {
    /// basic.deliver.
    Deliver(DeliverArgs<'a>),
    /// basic.ack.
    Ack(BasicAck),
    /// basic.nack.
    Nack(BasicNack),
}

/// The class and method ids of basic.deliver, basic.ack and basic.nack.
const DELIVER: [u8; 4] = [0, 60, 0, 60];
const ACK: [u8; 4] = [0, 60, 0, 80];
const NACK: [u8; 4] = [0, 60, 0, 120];

/// `payload` (class id, method id, arguments) if it is one of the methods above and holds
/// exactly its arguments; `None` sends it to the generated decoder.
#[inline(always)]
pub(crate) fn hot(payload: &[u8]) -> Option<Hot<'_>> {
    let (ids, args) = payload.split_first_chunk::<4>()?;
    let (rest, method) = match *ids {
        DELIVER => deliver_args(args).ok()?,
        ACK => (longlong, octet)
            .map(|(delivery_tag, bits)| {
                Hot::Ack(BasicAck {
                    delivery_tag,
                    multiple: bits & 1 != 0,
                })
            })
            .parse_complete(args)
            .ok()?,
        NACK => (longlong, octet)
            .map(|(delivery_tag, bits)| {
                Hot::Nack(BasicNack {
                    delivery_tag,
                    multiple: bits & 1 != 0,
                    requeue: bits & 2 != 0,
                })
            })
            .parse_complete(args)
            .ok()?,
        _ => return None,
    };
    rest.is_empty().then_some(method)
}

/// basic.deliver's arguments after its ids: consumer-tag (shortstr), delivery-tag (longlong),
/// redelivered (a bit, alone in its octet), exchange and routing-key (shortstr).
#[inline(always)]
pub(crate) fn deliver_args(input: &[u8]) -> PResult<'_, Hot<'_>> {
    (short_str, longlong, octet, short_str, short_str)
        .map(
            |(consumer_tag, delivery_tag, bits, exchange, routing_key)| {
                Hot::Deliver(DeliverArgs {
                    consumer_tag,
                    delivery_tag,
                    // A run of bits starts a new octet, LSB first; the other bits are not read.
                    redelivered: bits & 1 != 0,
                    exchange,
                    routing_key,
                })
            },
        )
        .parse_complete(input)
}
