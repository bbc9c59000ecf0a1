//! Names as short strings: [`IntoShortStr`], what the channel's calls take for an exchange,
//! a queue or a routing key.

use amqp_codec::ShortStr;

use crate::error::Error;

/// A name as a short string (at most 255 bytes).
pub(crate) fn short(s: &str) -> Result<ShortStr, Error> {
    Ok(ShortStr::try_from(s)?)
}

pub use amqp_codec::IntoShortStr;
