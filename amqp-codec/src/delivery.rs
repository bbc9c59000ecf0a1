//! A `basic.deliver` message read whole and in place: [`DeliveryRef`], borrowed from a
//! [`crate::FrameBatch`], and [`Delivery`], the same owned with one reference count.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use crate::assembly::Content;
use crate::body::Body;
use crate::constants::ClassId;
use crate::methods::{BasicDeliver, Method};
use crate::properties::{BasicProperties, ContentHeader, PropertiesRef};
use crate::read::deliver::DeliverArgs;
use crate::strings::ShortStr;

/// A delivery (its `basic.deliver`, content header and body, which came in one frame or none)
/// read in place from the frames it came in: every field is a slice of those frames, so reading
/// the routing key, the properties or the body takes no reference count and copies nothing.
///
/// Yielded by a [`crate::FrameBatch`]'s iterator ([`crate::Inbound::Delivery`]). To keep it
/// past the batch, [`DeliveryRef::to_delivery`] makes an owned [`Delivery`] (one reference count
/// for the whole message), [`DeliveryRef::to_content`] the [`Content`] the assembler would have
/// made (one per string, the properties and the body).
#[derive(Clone, Copy)]
pub struct DeliveryRef<'a> {
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    consumer_tag: &'a [u8],
    exchange: &'a [u8],
    routing_key: &'a [u8],
    properties: PropertiesRef<'a>,
    body: &'a [u8],
    /// The message's frames, from the method frame's type octet to the last frame-end.
    frames: &'a [u8],
    /// The bytes all of the above are slices of.
    owner: &'a Bytes,
}

/// The parts of a delivery read in place, for [`DeliveryRef::new`].
pub(crate) struct Parts<'a> {
    pub(crate) channel: u16,
    pub(crate) delivery_tag: u64,
    pub(crate) redelivered: bool,
    pub(crate) consumer_tag: &'a [u8],
    pub(crate) exchange: &'a [u8],
    pub(crate) routing_key: &'a [u8],
    pub(crate) flags: u16,
    pub(crate) properties: &'a [u8],
    pub(crate) body: &'a [u8],
    pub(crate) frames: &'a [u8],
}

impl<'a> DeliveryRef<'a> {
    /// A delivery from parts read (and checked) from `owner`.
    #[inline(always)]
    pub(crate) fn new(parts: Parts<'a>, owner: &'a Bytes) -> Self {
        Self {
            channel: parts.channel,
            delivery_tag: parts.delivery_tag,
            redelivered: parts.redelivered,
            consumer_tag: parts.consumer_tag,
            exchange: parts.exchange,
            routing_key: parts.routing_key,
            properties: PropertiesRef::new(parts.flags, parts.properties, owner),
            body: parts.body,
            frames: parts.frames,
            owner,
        }
    }

    /// The channel it arrived on.
    pub fn channel(&self) -> u16 {
        self.channel
    }
    /// The consumer's tag.
    pub fn consumer_tag(&self) -> &'a [u8] {
        self.consumer_tag
    }
    /// The channel-scoped tag to acknowledge it with.
    pub fn delivery_tag(&self) -> u64 {
        self.delivery_tag
    }
    /// True if it was delivered before and not acknowledged.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }
    /// The exchange it was published to.
    pub fn exchange(&self) -> &'a [u8] {
        self.exchange
    }
    /// The routing key it was published with.
    pub fn routing_key(&self) -> &'a [u8] {
        self.routing_key
    }
    /// Its properties, read in place.
    pub fn properties(&self) -> PropertiesRef<'a> {
        self.properties
    }
    /// Its body (the body size its header declared, which one body frame carried).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
    /// Frames it came in: 3, or 2 for an empty body (which takes no body frame).
    pub fn frames(&self) -> usize {
        if self.body.is_empty() { 2 } else { 3 }
    }

    /// The `basic.deliver`, owned (one reference count per string).
    pub fn to_method(&self) -> BasicDeliver {
        let args = DeliverArgs {
            consumer_tag: self.consumer_tag,
            delivery_tag: self.delivery_tag,
            redelivered: self.redelivered,
            exchange: self.exchange,
            routing_key: self.routing_key,
        };
        owned_deliver(args, self.owner)
    }

    /// The message as the [`crate::ContentAssembler`] would have handed it over from the same
    /// frames (one reference count per string, the properties and the body).
    pub fn to_content(&self) -> Content {
        Content {
            method: Method::BasicDeliver(self.to_method()),
            header: ContentHeader {
                class_id: ClassId::BASIC,
                weight: 0,
                body_size: self.body.len() as u64,
                properties: self.properties.to_properties(),
            },
            body: Body::from(self.owner.slice_ref(self.body)),
        }
    }

    /// The message, owned: one reference count for the whole of it, taken here and released
    /// when the [`Delivery`] is dropped; reading it takes none.
    pub fn to_delivery(&self) -> Delivery {
        let start = self.frames.as_ptr() as usize;
        // Offsets within the frames, which the batch reads whole only up to `u32::MAX` octets
        // long (`BatchIter`); a `Delivery::view` of a wrong range reads empty, never panics.
        let at = |s: &[u8]| {
            let from = (s.as_ptr() as usize).wrapping_sub(start);
            let from = u32::try_from(from).unwrap_or(u32::MAX);
            from..from.saturating_add(u32::try_from(s.len()).unwrap_or(u32::MAX))
        };
        Delivery {
            channel: self.channel,
            delivery_tag: self.delivery_tag,
            redelivered: self.redelivered,
            flags: self.properties.wire_flags(),
            consumer_tag: at(self.consumer_tag),
            exchange: at(self.exchange),
            routing_key: at(self.routing_key),
            properties: at(self.properties.wire_raw()),
            body: at(self.body),
            bytes: self.owner.slice_ref(self.frames),
        }
    }
}

impl fmt::Debug for DeliveryRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryRef")
            .field("channel", &self.channel)
            .field("consumer_tag", &String::from_utf8_lossy(self.consumer_tag))
            .field("delivery_tag", &self.delivery_tag)
            .field("redelivered", &self.redelivered)
            .field("exchange", &String::from_utf8_lossy(self.exchange))
            .field("routing_key", &String::from_utf8_lossy(self.routing_key))
            .field("properties", &self.properties)
            .field("body_size", &self.body.len())
            .finish()
    }
}

/// Two deliveries are equal when they read the same: same channel, fields, properties and body.
impl PartialEq for DeliveryRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        (self.channel, self.delivery_tag, self.redelivered)
            == (other.channel, other.delivery_tag, other.redelivered)
            && (
                self.consumer_tag,
                self.exchange,
                self.routing_key,
                self.body,
            ) == (
                other.consumer_tag,
                other.exchange,
                other.routing_key,
                other.body,
            )
            && self.properties == other.properties
    }
}

impl Eq for DeliveryRef<'_> {}

/// A `basic.deliver` read from `owner`, owned: its strings share `owner`. Once per delivery a
/// client hands to its application (the client keeps a [`Delivery`] until then).
#[inline]
pub(crate) fn owned_deliver(args: DeliverArgs<'_>, owner: &Bytes) -> BasicDeliver {
    let share = |s| ShortStr::from_wire(owner.slice_ref(s));
    BasicDeliver {
        consumer_tag: share(args.consumer_tag),
        delivery_tag: args.delivery_tag,
        redelivered: args.redelivered,
        exchange: share(args.exchange),
        routing_key: share(args.routing_key),
    }
}

/// A delivery read whole, owned: the bytes of its frames (one reference count to the read
/// buffer) and where its fields are in them. Its getters are [`DeliveryRef`]'s, through
/// [`Delivery::view`]: reading takes no reference count.
///
/// Made by [`DeliveryRef::to_delivery`]. Its fields are offsets of 32 bits (a whole delivery
/// is at most `u32::MAX` octets of frames): 88 bytes, where `usize` ranges made 128, which a
/// client holds once per delivery waiting in a consumer's buffer.
#[derive(Clone)]
pub struct Delivery {
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    /// The first property flags word.
    flags: u16,
    consumer_tag: Range<u32>,
    exchange: Range<u32>,
    routing_key: Range<u32>,
    /// The bytes after the first flags word (continuation words, then the properties).
    properties: Range<u32>,
    body: Range<u32>,
    /// The message's frames.
    bytes: Bytes,
}

impl Delivery {
    /// The delivery, read in place: every getter returns a slice of this delivery's bytes.
    #[inline]
    pub fn view(&self) -> DeliveryRef<'_> {
        DeliveryRef::new(
            Parts {
                channel: self.channel,
                delivery_tag: self.delivery_tag,
                redelivered: self.redelivered,
                consumer_tag: self.at(&self.consumer_tag),
                exchange: self.at(&self.exchange),
                routing_key: self.at(&self.routing_key),
                flags: self.flags,
                properties: self.at(&self.properties),
                body: self.at(&self.body),
                frames: &self.bytes,
            },
            &self.bytes,
        )
    }

    /// The bytes at `range` (one of this delivery's fields).
    #[inline]
    fn at(&self, range: &Range<u32>) -> &[u8] {
        self.bytes
            .get(range.start as usize..range.end as usize)
            .unwrap_or_default()
    }

    /// The channel it arrived on.
    pub fn channel(&self) -> u16 {
        self.channel
    }
    /// The channel-scoped tag to acknowledge it with.
    pub fn delivery_tag(&self) -> u64 {
        self.delivery_tag
    }
    /// True if it was delivered before and not acknowledged.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }
    /// The consumer's tag.
    pub fn consumer_tag(&self) -> &[u8] {
        self.at(&self.consumer_tag)
    }
    /// The exchange it was published to.
    pub fn exchange(&self) -> &[u8] {
        self.at(&self.exchange)
    }
    /// The routing key it was published with.
    #[inline]
    pub fn routing_key(&self) -> &[u8] {
        self.at(&self.routing_key)
    }
    /// Its properties, read in place.
    #[inline]
    pub fn properties(&self) -> PropertiesRef<'_> {
        PropertiesRef::new(self.flags, self.at(&self.properties), &self.bytes)
    }
    /// Its body.
    #[inline]
    pub fn body(&self) -> &[u8] {
        self.at(&self.body)
    }
    /// Its body, sharing this delivery's bytes (one reference count).
    pub fn body_bytes(&self) -> Bytes {
        self.bytes.slice_ref(self.body())
    }
    /// The owned properties, sharing this delivery's bytes (one reference count).
    pub fn to_properties(&self) -> BasicProperties {
        self.properties().to_properties()
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.view(), f)
    }
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl Eq for Delivery {}
