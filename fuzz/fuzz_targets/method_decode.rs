//! `Method::decode` on arbitrary method-frame payloads (class id, method id, arguments).
//!
//! Whatever decodes must re-encode to exactly `encoded_len()` bytes that decode to an equal
//! method of the same length, and encoding that again must give the same bytes (bits in a packed
//! octet that name no field are the only thing allowed to differ from the input).

#![no_main]

use amqp_codec::Method;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    let method = match Method::decode(&payload) {
        Ok(method) => method,
        Err(err) => {
            let _ = (err.reply_code(), err.to_string());
            return;
        }
    };
    // The ids in the payload are the ones the method reports.
    assert_eq!(method.class_id().0, u16::from_be_bytes([data[0], data[1]]));
    assert_eq!(method.method_id(), u16::from_be_bytes([data[2], data[3]]));
    let _ = (method.name(), method.has_content(), method.is_synchronous());

    let mut encoded = BytesMut::new();
    method.encode(&mut encoded);
    assert_eq!(encoded.len(), method.encoded_len(), "encoded_len is wrong");
    // Every field is fixed-size or length-prefixed and trailing bytes are refused, so only the
    // values of unused bits may change, never the length.
    assert_eq!(encoded.len(), data.len(), "re-encoding changed the length");
    let encoded = encoded.freeze();

    let again = Method::decode(&encoded).expect("a re-encoded method must decode");
    assert_eq!(method, again);

    let mut twice = BytesMut::new();
    again.encode(&mut twice);
    assert_eq!(twice, encoded, "encoding is not stable");
});
