//! The client's sans-IO connection core fed arbitrary broker bytes, in chunks and with time
//! steps the input chooses, after a real handshake, with confirms and a consumer live. Any
//! panic is a bug (see `amqp_client::fuzzing::drive_core`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amqp_client::fuzzing::drive_core(data);
});
