//! Names and request builders shared by the channel's calls: short-string conversion
//! ([`IntoShortStr`]) and the bind methods with and without no-wait.

use amqp_codec::methods::{ExchangeBind, ExchangeUnbind, QueueBind};
use amqp_codec::table::FieldTable;
use amqp_codec::{Method, ShortStr};

use crate::error::Error;

/// A name as a short string (at most 255 bytes).
pub(crate) fn short(s: &str) -> Result<ShortStr, Error> {
    Ok(ShortStr::try_from(s)?)
}

pub(crate) fn exchange_bind(
    destination: &str,
    source: &str,
    routing_key: &str,
    arguments: FieldTable,
    nowait: bool,
) -> Result<Method, Error> {
    Ok(Method::ExchangeBind(ExchangeBind {
        ticket: 0,
        destination: short(destination)?,
        source: short(source)?,
        routing_key: short(routing_key)?,
        nowait,
        arguments,
    }))
}

pub(crate) fn exchange_unbind(
    destination: &str,
    source: &str,
    routing_key: &str,
    arguments: FieldTable,
    nowait: bool,
) -> Result<Method, Error> {
    Ok(Method::ExchangeUnbind(ExchangeUnbind {
        ticket: 0,
        destination: short(destination)?,
        source: short(source)?,
        routing_key: short(routing_key)?,
        nowait,
        arguments,
    }))
}

pub(crate) fn queue_bind(
    queue: &str,
    exchange: &str,
    routing_key: &str,
    arguments: FieldTable,
    nowait: bool,
) -> Result<Method, Error> {
    Ok(Method::QueueBind(QueueBind {
        ticket: 0,
        queue: short(queue)?,
        exchange: short(exchange)?,
        routing_key: short(routing_key)?,
        nowait,
        arguments,
    }))
}

/// A name (exchange, routing key) for [`crate::Channel::basic_publish`]: `&str` and `String` are
/// copied into a short string; a [`ShortStr`] is shared without allocating, so a hot publish
/// loop can build its names once.
pub trait IntoShortStr {
    /// The name as a short string; an error if it is longer than 255 bytes.
    fn into_short_str(self) -> Result<ShortStr, Error>;
}

impl IntoShortStr for &str {
    fn into_short_str(self) -> Result<ShortStr, Error> {
        short(self)
    }
}

impl IntoShortStr for &String {
    fn into_short_str(self) -> Result<ShortStr, Error> {
        short(self)
    }
}

impl IntoShortStr for String {
    fn into_short_str(self) -> Result<ShortStr, Error> {
        Ok(ShortStr::try_from(self)?)
    }
}

impl IntoShortStr for ShortStr {
    fn into_short_str(self) -> Result<ShortStr, Error> {
        Ok(self)
    }
}

impl IntoShortStr for &ShortStr {
    fn into_short_str(self) -> Result<ShortStr, Error> {
        Ok(self.clone())
    }
}
