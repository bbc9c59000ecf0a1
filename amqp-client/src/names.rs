//! Names as short strings: [`IntoShortStr`], what the channel's calls take for an exchange,
//! a queue or a routing key.

use amqp_codec::ShortStr;

use crate::error::Error;

/// A name as a short string (at most 255 bytes).
pub(crate) fn short(s: &str) -> Result<ShortStr, Error> {
    Ok(ShortStr::try_from(s)?)
}

/// A name (queue, exchange, routing key, consumer tag) as the channel's calls take it:
/// `&str` and `String` are copied into a short string; a [`ShortStr`] is shared without
/// copying. (`basic_publish` takes any `AsRef<[u8]>` and copies nothing at all.)
pub trait IntoShortStr {
    /// The name as a short string; an error if it is longer than 255 bytes.
    fn into_short_str(self) -> Result<ShortStr, Error>;
}

impl IntoShortStr for &str {
    fn into_short_str(self) -> Result<ShortStr, Error> {
        short(self)
    }
}

impl IntoShortStr for &&str {
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
