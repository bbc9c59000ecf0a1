//! Names as short strings: [`IntoShortStr`], what the channel's calls take for an exchange,
//! a queue or a routing key.

use amqp_codec::ShortStr;

use crate::error::Error;

/// A name as a short string (at most 255 bytes).
pub(crate) fn short(s: &str) -> Result<ShortStr, Error> {
    Ok(ShortStr::try_from(s)?)
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
