//! [`PropertiesBuilder`]: message properties as plain fields, to build [`BasicProperties`] from.

use bytes::BytesMut;

use super::{BasicProperties, Property};
use crate::strings::ShortStr;
use crate::table::FieldTable;
use crate::wire::{BufSink, Sink};

/// The 14 basic properties as fields, for building [`BasicProperties`].
///
/// Fill the fields (or chain the `with_` setters) and call [`PropertiesBuilder::build`], which
/// encodes them once; the result is cheap to clone and to put on the wire any number of times.
///
/// ```
/// use amqp_codec::{BasicProperties, PropertiesBuilder, ShortStr};
/// let props = PropertiesBuilder {
///     content_type: Some(ShortStr::from_static("application/json")),
///     delivery_mode: Some(BasicProperties::PERSISTENT),
///     ..Default::default()
/// }
/// .build();
/// assert!(props.is_persistent());
/// assert_eq!(props.content_type().as_deref(), Some(&b"application/json"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertiesBuilder {
    /// MIME content type, e.g. `application/json`.
    pub content_type: Option<ShortStr>,
    /// MIME content encoding, e.g. `gzip`.
    pub content_encoding: Option<ShortStr>,
    /// Application headers; also where RabbitMQ puts `x-death`.
    pub headers: Option<FieldTable>,
    /// 1 transient, 2 persistent.
    pub delivery_mode: Option<u8>,
    /// Priority 0-9 (for priority queues).
    pub priority: Option<u8>,
    /// Correlates an RPC reply with its request.
    pub correlation_id: Option<ShortStr>,
    /// Queue to send an RPC reply to.
    pub reply_to: Option<ShortStr>,
    /// Per-message TTL in milliseconds, as a decimal string.
    pub expiration: Option<ShortStr>,
    /// Application message id (for idempotent consumers).
    pub message_id: Option<ShortStr>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Application message type name (the spec's `type`).
    pub kind: Option<ShortStr>,
    /// Publishing user; RabbitMQ checks it against the connection's user.
    pub user_id: Option<ShortStr>,
    /// Publishing application.
    pub app_id: Option<ShortStr>,
    /// Reserved (deprecated in 0-9-1).
    pub cluster_id: Option<ShortStr>,
}

macro_rules! setters {
    ($($field:ident: $ty:ty => $with:ident),* $(,)?) => {
        impl PropertiesBuilder {
            $(
                #[doc = concat!("Sets `", stringify!($field), "`.")]
                pub fn $with(mut self, value: $ty) -> Self {
                    self.$field = Some(value);
                    self
                }
            )*
        }
    };
}

setters! {
    content_type: ShortStr => with_content_type,
    content_encoding: ShortStr => with_content_encoding,
    headers: FieldTable => with_headers,
    delivery_mode: u8 => with_delivery_mode,
    priority: u8 => with_priority,
    correlation_id: ShortStr => with_correlation_id,
    reply_to: ShortStr => with_reply_to,
    expiration: ShortStr => with_expiration,
    message_id: ShortStr => with_message_id,
    timestamp: u64 => with_timestamp,
    kind: ShortStr => with_kind,
    user_id: ShortStr => with_user_id,
    app_id: ShortStr => with_app_id,
    cluster_id: ShortStr => with_cluster_id,
}

impl PropertiesBuilder {
    /// Encodes the present properties, in wire order, into [`BasicProperties`].
    pub fn build(&self) -> BasicProperties {
        use Property::*;
        let mut raw = BytesMut::new();
        let mut w = PropertyWriter {
            sink: BufSink::new(&mut raw),
            flags: 0,
        };
        w.short(ContentType, &self.content_type);
        w.short(ContentEncoding, &self.content_encoding);
        if let Some(h) = &self.headers {
            w.present(Headers).long_str(h.as_raw());
        }
        if let Some(v) = self.delivery_mode {
            w.present(DeliveryMode).octet(v);
        }
        if let Some(v) = self.priority {
            w.present(Priority).octet(v);
        }
        w.short(CorrelationId, &self.correlation_id);
        w.short(ReplyTo, &self.reply_to);
        w.short(Expiration, &self.expiration);
        w.short(MessageId, &self.message_id);
        if let Some(v) = self.timestamp {
            w.present(Timestamp).longlong(v);
        }
        w.short(Type, &self.kind);
        w.short(UserId, &self.user_id);
        w.short(AppId, &self.app_id);
        w.short(ClusterId, &self.cluster_id);
        let flags = w.flags;
        BasicProperties {
            flags,
            raw: raw.freeze(),
        }
    }
}

/// Writes present properties and collects their flag bits; callers go in wire order.
struct PropertyWriter<'a> {
    sink: BufSink<'a>,
    flags: u16,
}

impl<'a> PropertyWriter<'a> {
    /// Marks `p` present and returns the sink to write its value to.
    fn present(&mut self, p: Property) -> &mut BufSink<'a> {
        self.flags |= p.bit();
        &mut self.sink
    }

    fn short(&mut self, p: Property, v: &Option<ShortStr>) {
        if let Some(v) = v {
            self.present(p).short_str(v);
        }
    }
}

impl From<PropertiesBuilder> for BasicProperties {
    fn from(b: PropertiesBuilder) -> Self {
        b.build()
    }
}

impl From<&PropertiesBuilder> for BasicProperties {
    fn from(b: &PropertiesBuilder) -> Self {
        b.build()
    }
}
