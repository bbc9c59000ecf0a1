//! SASL for connection.start / connection.start-ok: whether the server offers the configured
//! mechanism, and the `response` field for it.
//!
//! RabbitMQ sends no connection.secure for PLAIN, AMQPLAIN or EXTERNAL: the start-ok response
//! is the whole exchange.

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::{AuthMechanism, Secret};

/// Whether `mechanism` is among the server's `mechanisms` (connection.start's long string,
/// names separated by spaces, e.g. `b"AMQPLAIN PLAIN"`).
///
/// SASL names are upper case (RFC 4422), but the comparison ignores ASCII case so that a
/// server spelling them differently still matches; any run of ASCII whitespace separates.
pub(crate) fn mechanism_offered(mechanisms: &[u8], mechanism: AuthMechanism) -> bool {
    let wanted = mechanism.name().as_bytes();
    mechanisms
        .split(u8::is_ascii_whitespace)
        .any(|offered| offered.eq_ignore_ascii_case(wanted))
}

/// The start-ok `response` for `mechanism`.
///
/// - `PLAIN` (RFC 4616): `\0username\0password`, with an empty authorization identity.
/// - `AMQPLAIN`: field-table *entries* without the table's 4-byte length, `LOGIN` then
///   `PASSWORD`, both long strings (`S`). RabbitMQ's `rabbit_auth_mechanism_amqplain` parses the
///   response with `parse_table`, which takes bare entries, and requires both keys with the
///   `longstr` type.
/// - `EXTERNAL`: empty; the broker takes the identity from the TLS client certificate.
///
/// PLAIN cannot express a NUL inside the user name or password: such credentials are sent as
/// they are, and the broker refuses the login.
pub(crate) fn start_ok_response(
    mechanism: AuthMechanism,
    username: &str,
    password: &Secret,
) -> Bytes {
    let password = password.expose();
    match mechanism {
        AuthMechanism::Plain => {
            let mut buf = BytesMut::with_capacity(2 + username.len() + password.len());
            buf.put_u8(0);
            buf.put_slice(username.as_bytes());
            buf.put_u8(0);
            buf.put_slice(password.as_bytes());
            buf.freeze()
        }
        AuthMechanism::Amqplain => {
            let mut buf = BytesMut::with_capacity(22 + username.len() + password.len());
            put_long_string_entry(&mut buf, b"LOGIN", username.as_bytes());
            put_long_string_entry(&mut buf, b"PASSWORD", password.as_bytes());
            buf.freeze()
        }
        AuthMechanism::External => Bytes::new(),
    }
}

/// Appends one field-table entry: short-string key, `S`, 4-byte length, bytes.
///
/// Written by hand rather than with `FieldTable::builder()` because the builder reports
/// over-long values as an error this infallible function would have to invent a response for;
/// here the keys are fixed and short, and a value above 4 GiB cannot occur (frame-max and the
/// broker bound a start-ok far below it) — its length is clamped rather than wrapped so that an
/// impossible input still produces a table the broker rejects instead of a misparse.
fn put_long_string_entry(buf: &mut BytesMut, key: &'static [u8], value: &[u8]) {
    debug_assert!(key.len() <= usize::from(u8::MAX));
    buf.put_u8(key.len() as u8);
    buf.put_slice(key);
    buf.put_u8(b'S');
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    buf.put_u32(len);
    buf.put_slice(&value[..len as usize]);
}

#[cfg(test)]
mod tests {
    use amqp_codec::{FieldTable, FieldValue, LongStr};

    use super::*;

    #[test]
    fn plain_is_nul_user_nul_password() {
        let r = start_ok_response(AuthMechanism::Plain, "guest", &Secret::new("guest"));
        assert_eq!(&r[..], b"\0guest\0guest");
        let r = start_ok_response(AuthMechanism::Plain, "", &Secret::new(""));
        assert_eq!(&r[..], b"\0\0");
        let r = start_ok_response(AuthMechanism::Plain, "üser", &Secret::new("p:w@d"));
        assert_eq!(&r[..], "\0üser\0p:w@d".as_bytes());
    }

    #[test]
    fn amqplain_is_bare_table_entries() {
        let r = start_ok_response(AuthMechanism::Amqplain, "guest", &Secret::new("secret"));
        let mut want = Vec::new();
        want.extend_from_slice(b"\x05LOGINS\x00\x00\x00\x05guest");
        want.extend_from_slice(b"\x08PASSWORDS\x00\x00\x00\x06secret");
        assert_eq!(&r[..], &want[..]);
    }

    #[test]
    fn amqplain_matches_the_codec_table_encoding() {
        // The same bytes as the codec's own table entries (FieldTable's raw form has no
        // length prefix), and they decode back with the codec.
        let table = FieldTable::builder()
            .insert("LOGIN", "üser")
            .insert("PASSWORD", "")
            .build()
            .unwrap();
        let r = start_ok_response(AuthMechanism::Amqplain, "üser", &Secret::new(""));
        assert_eq!(&r, table.as_raw());
        let decoded = FieldTable::from_raw(r).unwrap();
        assert_eq!(
            decoded.get("LOGIN"),
            Some(FieldValue::LongStr(LongStr::from("üser")))
        );
        assert_eq!(
            decoded
                .get("PASSWORD")
                .and_then(|v| v.as_str().map(str::to_owned)),
            Some(String::new())
        );
    }

    #[test]
    fn external_is_empty() {
        let r = start_ok_response(AuthMechanism::External, "ignored", &Secret::new("ignored"));
        assert!(r.is_empty());
    }

    #[test]
    fn offered_mechanisms() {
        let rabbit = b"AMQPLAIN PLAIN";
        assert!(mechanism_offered(rabbit, AuthMechanism::Plain));
        assert!(mechanism_offered(rabbit, AuthMechanism::Amqplain));
        assert!(!mechanism_offered(rabbit, AuthMechanism::External));
        assert!(mechanism_offered(
            b"PLAIN AMQPLAIN EXTERNAL",
            AuthMechanism::External
        ));
        assert!(mechanism_offered(
            b"  plain\tEXTERNAL ",
            AuthMechanism::Plain
        ));
        // Whole names only: PLAIN is not a prefix match for AMQPLAIN and vice versa.
        assert!(!mechanism_offered(b"AMQPLAIN", AuthMechanism::Plain));
        assert!(!mechanism_offered(b"PLAINX XPLAIN", AuthMechanism::Plain));
        assert!(!mechanism_offered(b"", AuthMechanism::Plain));
    }
}
