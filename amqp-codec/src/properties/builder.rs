//! [`PropertiesBuilder`]: message properties as plain fields, to build [`BasicProperties`] from.

use std::time::Duration;

use bytes::BytesMut;

use super::{BasicProperties, Property};
use crate::error::EncodeError;
use crate::strings::{IntoShortStr, ShortStr};
use crate::table::{FieldTable, FieldValue};
use crate::wire::{BufSink, Sink};

/// The 14 basic properties as fields, for building [`BasicProperties`].
///
/// Chain the `with_` setters and call [`PropertiesBuilder::build`], which encodes them once;
/// the result is cheap to clone and to put on the wire any number of times. String properties
/// take `&str`, `String` or [`ShortStr`]; one longer than 255 bytes is not truncated but makes
/// `build` fail with a [`PropertyError`] naming it.
///
/// ```
/// use amqp_codec::BasicProperties;
/// let props = BasicProperties::builder()
///     .with_content_type("application/json")
///     .with_header("tenant", "acme")
///     .persistent()
///     .build()
///     .unwrap();
/// assert!(props.is_persistent());
/// assert_eq!(props.content_type().as_deref(), Some(&b"application/json"[..]));
/// let too_long = BasicProperties::builder().with_message_id("x".repeat(300)).build();
/// assert_eq!(too_long.unwrap_err().property, "message_id");
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
    /// The first value a setter could not take, reported by `build` (setters chain, so they
    /// cannot return it themselves; `http::request::Builder` defers its errors the same way).
    pub(crate) error: Option<PropertyError>,
}

/// A property value that cannot go on the wire: a string longer than 255 bytes, or a header
/// key longer than 255 bytes. Returned by [`PropertiesBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("property `{property}`: {source}")]
pub struct PropertyError {
    /// The property's field name, e.g. `"message_id"` (`"headers"` for a header key).
    pub property: &'static str,
    /// Why its value was refused.
    #[source]
    pub source: EncodeError,
}

/// Adds a `with_` setter per string property; a value that does not fit is remembered for
/// `build` and the field left as it was.
macro_rules! string_setters {
    ($($field:ident => $with:ident),* $(,)?) => {
        impl PropertiesBuilder {
            $(
                #[doc = concat!("Sets `", stringify!($field), "` from `&str`, `String` or `ShortStr`.")]
                pub fn $with(mut self, value: impl IntoShortStr) -> Self {
                    match value.into_short_str() {
                        Ok(v) => self.$field = Some(v),
                        Err(source) => self.refuse(stringify!($field), source),
                    }
                    self
                }
            )*
        }
    };
}

string_setters! {
    content_type => with_content_type,
    content_encoding => with_content_encoding,
    correlation_id => with_correlation_id,
    reply_to => with_reply_to,
    expiration => with_expiration,
    message_id => with_message_id,
    kind => with_kind,
    user_id => with_user_id,
    app_id => with_app_id,
    cluster_id => with_cluster_id,
}

impl PropertiesBuilder {
    /// Sets the application headers, replacing any set before.
    pub fn with_headers(mut self, headers: impl Into<FieldTable>) -> Self {
        self.headers = Some(headers.into());
        self
    }

    /// Sets one application header (replacing a header of the same key), e.g.
    /// `.with_header("attempt", 3)`.
    pub fn with_header(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        let headers = self.headers.get_or_insert_with(FieldTable::default);
        if let Err(source) = headers.try_insert(key, value) {
            self.refuse("headers", source);
        }
        self
    }

    /// Sets `delivery_mode` (1 transient, 2 persistent).
    pub fn with_delivery_mode(mut self, mode: u8) -> Self {
        self.delivery_mode = Some(mode);
        self
    }

    /// Marks the message persistent (`delivery_mode` 2): a durable queue writes it to disk.
    pub fn persistent(self) -> Self {
        self.with_delivery_mode(BasicProperties::PERSISTENT)
    }

    /// Sets `priority` (0-9 for RabbitMQ's priority queues).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets `timestamp`, in seconds since the Unix epoch.
    pub fn with_timestamp(mut self, seconds: u64) -> Self {
        self.timestamp = Some(seconds);
        self
    }

    /// Sets `expiration`, the message's TTL, from a duration (RabbitMQ reads it as whole
    /// milliseconds written in decimal).
    pub fn with_ttl(self, ttl: Duration) -> Self {
        self.with_expiration(ttl.as_millis().to_string())
    }

    /// Remembers the first refused value for `build`.
    fn refuse(&mut self, property: &'static str, source: EncodeError) {
        if self.error.is_none() {
            self.error = Some(PropertyError { property, source });
        }
    }
}

impl PropertiesBuilder {
    /// Encodes the present properties, in wire order, into [`BasicProperties`]; the first value
    /// a setter refused, if any, as a [`PropertyError`].
    pub fn build(&self) -> Result<BasicProperties, PropertyError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        Ok(self.encode())
    }

    /// Encodes the present properties, in wire order.
    fn encode(&self) -> BasicProperties {
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

impl BasicProperties {
    /// Properties with only `delivery_mode` persistent set: what a durable task queue's
    /// messages usually carry.
    pub fn persistent() -> Self {
        PropertiesBuilder::default().persistent().encode()
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

impl TryFrom<PropertiesBuilder> for BasicProperties {
    type Error = PropertyError;
    fn try_from(b: PropertiesBuilder) -> Result<Self, PropertyError> {
        b.build()
    }
}

impl TryFrom<&PropertiesBuilder> for BasicProperties {
    type Error = PropertyError;
    fn try_from(b: &PropertiesBuilder) -> Result<Self, PropertyError> {
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_taken_as_str_string_or_short_str() {
        let props = PropertiesBuilder::default()
            .with_content_type("application/json")
            .with_message_id(String::from("m-1"))
            .with_app_id(ShortStr::from_static("app"))
            .build()
            .unwrap();
        assert_eq!(props.content_type().unwrap(), "application/json");
        assert_eq!(props.message_id().unwrap(), "m-1");
        assert_eq!(props.app_id().unwrap(), "app");
    }

    #[test]
    fn an_over_long_string_fails_build_and_names_the_property() {
        let b = PropertiesBuilder::default()
            .with_correlation_id("c".repeat(256))
            .with_reply_to("r".repeat(300));
        let err = b.build().unwrap_err();
        assert_eq!(
            err.property, "correlation_id",
            "the first refusal is reported"
        );
        assert_eq!(err.source, EncodeError::ShortStrTooLong { len: 256 });
        assert_eq!(b.correlation_id, None, "the field is left as it was");
        assert!(err.to_string().contains("correlation_id"), "{err}");
        // 255 bytes is the limit, not 254.
        let max = PropertiesBuilder::default()
            .with_kind("k".repeat(255))
            .build();
        assert_eq!(max.unwrap().kind().unwrap().len(), 255);
    }

    #[test]
    fn headers_are_set_one_at_a_time_or_all_at_once() {
        let props = PropertiesBuilder::default()
            .with_header("attempt", 3)
            .with_header("tenant", "acme")
            .with_header("attempt", 4)
            .build()
            .unwrap();
        let headers = props.headers().unwrap();
        assert_eq!(headers.len(), 2, "a key set twice keeps the last value");
        assert_eq!(headers.get("attempt"), Some(FieldValue::I32(4)));
        let replaced = PropertiesBuilder::default()
            .with_header("a", 1)
            .with_headers(FieldTable::from([("b", FieldValue::from(2))]))
            .build()
            .unwrap();
        assert!(!replaced.headers().unwrap().contains_key("a"));
        let err = PropertiesBuilder::default()
            .with_header(&"k".repeat(256), 1)
            .build()
            .unwrap_err();
        assert_eq!(err.property, "headers");
    }

    #[test]
    fn ttl_is_whole_milliseconds_and_persistent_is_mode_two() {
        let props = PropertiesBuilder::default()
            .with_ttl(Duration::from_micros(1_500_999))
            .persistent()
            .build()
            .unwrap();
        assert_eq!(props.expiration().unwrap(), "1500");
        assert!(props.is_persistent());
        let mut without_ttl = props.to_builder();
        without_ttl.expiration = None;
        assert_eq!(without_ttl.build().unwrap(), BasicProperties::persistent());
    }
}
