//! The fuzzing entry point for the sans-IO connection core (`fuzz/fuzz_targets/client_core.rs`).
//! Not part of the public API: hidden from the docs and free to change.
//!
//! [`drive_core`] brings a core to the state where most code paths are live (handshake done,
//! a channel open in confirm mode with three mandatory publishes outstanding, a consumer with
//! a tiny buffer), then feeds the fuzzer's bytes as the broker's, in chunks whose sizes and
//! the time between them the input also chooses, draining the consumer as an application
//! would. Any panic is a bug; so is a core that pauses reading with no full consumer.

use std::time::Duration;

use amqp_codec::methods::{
    BasicAck, BasicConsume, BasicConsumeOk, BasicNack, BasicPublish, ChannelOpenOk, ConfirmSelect,
    ConfirmSelectOk, ConnectionOpenOk, ConnectionStart, ConnectionTune,
};
use amqp_codec::{BasicProperties, Frame, FrameDecoder, LongStr, Method, Outbound, ShortStr};
use bytes::{Buf, BytesMut};

use crate::config::{ConnectionConfig, Limits};
use crate::proto::WaiterId;
use crate::proto::harness::Harness;

/// The one waiter the fuzzed application polls under.
const APP: WaiterId = WaiterId(0);

/// The broker's side of the handshake, up to open-ok: a small channel-max and frame-max, and
/// heartbeats, so that their limits are live.
fn handshake(h: &mut Harness) {
    let start = Method::ConnectionStart(ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: Default::default(),
        mechanisms: LongStr::from("PLAIN"),
        locales: LongStr::from("en_US"),
    });
    h.feed(0, start);
    let tune = Method::ConnectionTune(ConnectionTune {
        channel_max: 8,
        frame_max: 4096,
        heartbeat: 5,
    });
    h.feed(0, tune);
    h.feed(0, Method::ConnectionOpenOk(ConnectionOpenOk::default()));
}

/// Recovery after the connection was lost: a new transport, the handshake, the channel
/// reopened with confirm mode and its consumer, as the supervisor and replay would do.
fn recover(h: &mut Harness, id: u16, epoch: u64, tag: &ShortStr) {
    if !h.core.restart("127.0.0.1", 5672, h.now) {
        return;
    }
    handshake(h);
    if h.core.reopen_channel(id, epoch).is_err() {
        return;
    }
    h.feed(id, Method::ChannelOpenOk(ChannelOpenOk::default()));
    let steps = [
        (
            Method::ConfirmSelect(ConfirmSelect { nowait: false }),
            Method::ConfirmSelectOk(ConfirmSelectOk {}),
        ),
        (
            Method::BasicConsume(BasicConsume {
                consumer_tag: tag.clone(),
                ..Default::default()
            }),
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: tag.clone(),
            }),
        ),
    ];
    for (request, reply) in steps {
        if h.core.replay_request(id, epoch, request).is_err() {
            return;
        }
        h.feed(id, reply);
    }
    h.core.finish_recovery(1);
    h.drain();
}

/// The application's side of the consumer: it settles each delivery as the input chooses
/// (ack, nack, ack-multiple, or hold it and ack it later out of order), and checks every ack
/// the core writes: none may settle a delivery the application still holds (acks coalesce
/// into multiple acks, see `Unsettled`).
struct App {
    /// Delivery tags the application holds unsettled (of the current generation).
    held: Vec<(u64, u64)>,
    /// Tags the application itself acked with `multiple`, until their frame is seen: such a
    /// frame is the application's doing, even if it covers a lower tag delivered after it
    /// (which a hostile broker can do and a real one never does).
    asked_multiple: Vec<u64>,
    /// The core's output not yet decoded.
    wire: BytesMut,
    decoder: FrameDecoder,
}

impl App {
    fn new() -> Self {
        Self {
            held: Vec::new(),
            asked_multiple: Vec::new(),
            wire: BytesMut::new(),
            decoder: FrameDecoder::with_frame_max(u32::MAX),
        }
    }

    /// Takes every buffered delivery and settles it as `choice` (an input byte) says.
    fn consume(&mut self, h: &mut Harness, (id, epoch): (u16, u64), tag: &ShortStr, choice: u8) {
        while let (std::task::Poll::Ready(Some(item)), _) =
            h.core.poll_delivery(id, epoch, tag, APP)
        {
            let Ok(d) = item else { continue };
            let t = d.delivery_tag();
            // Mixed, so that any run of choices over consecutive tags has some input byte.
            let mixed = mix(u64::from(choice) << 32 ^ t) % 8;
            let method = match mixed {
                0..=3 => ack(t, false),
                4 => Method::BasicNack(BasicNack {
                    delivery_tag: t,
                    multiple: false,
                    requeue: true,
                }),
                5 | 6 if self.held.len() < 64 => {
                    self.held.push((t, d.generation));
                    continue;
                }
                _ => {
                    // ack-multiple settles what the application held below it too.
                    self.held.retain(|&(h, _)| h > t);
                    self.asked_multiple.push(t);
                    ack(t, true)
                }
            };
            let _ = h.core.settle(id, epoch, d.generation, t, &method);
        }
        h.drain();
    }

    /// Acks what the application held, newest first.
    fn release(&mut self, h: &mut Harness, (id, epoch): (u16, u64)) {
        while let Some((t, generation)) = self.held.pop() {
            let _ = h.core.settle(id, epoch, generation, t, &ack(t, false));
        }
        h.drain();
    }

    /// Decodes what the core wrote and checks its acks.
    fn check(&mut self, written: &[u8]) {
        self.wire.extend_from_slice(written);
        if self.wire.starts_with(b"AMQP") {
            self.wire.advance(8.min(self.wire.len()));
        }
        while let Ok(Some(frame)) = self.decoder.decode(&mut self.wire) {
            if let Frame::Method {
                method: Method::BasicAck(a),
                ..
            } = frame
            {
                // A single ack is the application's own (a hostile broker may give two
                // deliveries one tag); a multiple one, merged or asked for, must cover
                // nothing it holds.
                if let Some(i) = self
                    .asked_multiple
                    .iter()
                    .position(|&t| t == a.delivery_tag)
                {
                    self.asked_multiple.swap_remove(i);
                    continue;
                }
                let covered = |&(h, _): &(u64, u64)| a.multiple && h <= a.delivery_tag;
                assert!(
                    !self.held.iter().any(covered),
                    "{a:?} settles a delivery the application holds: {:?}",
                    self.held
                );
            }
        }
    }
}

/// splitmix64's finaliser: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn ack(delivery_tag: u64, multiple: bool) -> Method {
    Method::BasicAck(BasicAck {
        delivery_tag,
        multiple,
    })
}

/// Runs the core over `data` as the broker's byte stream. Panics only on a bug. An odd first
/// byte turns automatic recovery on: then each loss of the connection is followed by a
/// recovery (up to three), and the rest of the input goes to the recovered connection.
#[doc(hidden)]
pub fn drive_core(data: &[u8]) {
    let recovery = data
        .first()
        .is_some_and(|b| b % 2 == 1)
        .then(crate::RecoveryPolicy::default);
    let config = ConnectionConfig {
        recovery,
        heartbeat: 5,
        limits: Limits {
            max_message_size: 1 << 16,
            consumer_buffer: 4,
            ..Limits::default()
        },
        ..ConnectionConfig::default()
    };
    let mut h = Harness::new(config);
    handshake(&mut h);
    let Some((id, epoch)) = h.try_channel() else {
        return;
    };
    let confirm = Method::ConfirmSelect(ConfirmSelect { nowait: false });
    h.call(
        (id, epoch),
        confirm,
        Method::ConfirmSelectOk(ConfirmSelectOk {}),
    );
    let tag = ShortStr::from_static("c");
    let consume = Method::BasicConsume(BasicConsume {
        consumer_tag: tag.clone(),
        ..Default::default()
    });
    let consume_ok = Method::BasicConsumeOk(BasicConsumeOk {
        consumer_tag: tag.clone(),
    });
    h.call((id, epoch), consume, consume_ok);
    let publish = Method::BasicPublish(BasicPublish {
        mandatory: true,
        ..Default::default()
    });
    for _ in 0..3 {
        let props = BasicProperties::default();
        let _ = h.core.publish(
            id,
            epoch,
            &crate::proto::harness::args_of(&publish),
            &props,
            "x".into(),
        );
    }
    h.drain();

    // The fuzzer's bytes: [chunk length, milliseconds to advance, payload...] repeated.
    let mut app = App::new();
    let mut inbound = BytesMut::new();
    let mut sink = Outbound::new();
    let mut rest = data;
    let mut recoveries = 0;
    while let [len, millis, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        inbound.extend_from_slice(&tail[..take]);
        rest = &tail[take..];
        h.core.handle_input(&mut inbound, h.now);
        h.drain();
        // The application drains its consumer (settling as the input says: the time byte
        // doubles as the choice) and collects confirms.
        app.consume(&mut h, (id, epoch), &tag, *millis);
        if millis % 4 == 0 {
            app.release(&mut h, (id, epoch));
        }
        for seq in 1..=3 {
            let _ = h.core.poll_confirm(id, epoch, 0, seq, APP);
        }
        h.advance(Duration::from_millis(u64::from(*millis) * 20));
        // The driver writes everything out.
        while h.core.take_output(&mut sink, h.now) {
            let written = sink.copy_to_bytes(sink.remaining());
            app.check(&written);
        }
        h.drain();
        assert!(
            !h.core.read_paused() || !h.core.is_finished(),
            "a finished core must not hold reading"
        );
        if h.core.is_finished() {
            if !h.core.is_recovering() || recoveries == 3 {
                return;
            }
            recoveries += 1;
            // Deliveries of the lost connection are stale: nothing holds them any more.
            app.held.clear();
            app.asked_multiple.clear();
            recover(&mut h, id, epoch, &tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames as the broker sends them, prefixed for `drive_core`'s chunking.
    fn chunked(frames: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        for piece in frames.chunks(7) {
            data.extend_from_slice(&[piece.len() as u8, 1]);
            data.extend_from_slice(piece);
        }
        data
    }

    #[test]
    fn seeds_run_without_panicking() {
        let mut frames = Outbound::new();
        let deliver = Method::BasicDeliver(amqp_codec::methods::BasicDeliver {
            consumer_tag: ShortStr::from_static("c"),
            delivery_tag: 1,
            ..Default::default()
        });
        for _ in 0..6 {
            frames
                .push_content(
                    1,
                    &deliver,
                    &BasicProperties::default(),
                    "body".into(),
                    4096,
                )
                .unwrap();
        }
        frames
            .push_method(
                1,
                &Method::BasicAck(amqp_codec::methods::BasicAck {
                    delivery_tag: 3,
                    multiple: true,
                }),
                0,
            )
            .unwrap();
        let bytes = frames.copy_to_bytes(frames.remaining());
        drive_core(&chunked(&bytes));
        drive_core(&[]);
        drive_core(&[255, 255, 1, 2, 3]);
        drive_core(&chunked(&[
            8, 0, 0, 0, 0, 0, 0, 0xCE, 1, 0, 9, 255, 255, 255, 255,
        ]));
        // Silence: time passes until the heartbeat timeout ends it.
        drive_core(&[0, 255, 0, 255, 0, 255, 0, 255]);
        // The same with recovery on (odd first byte): lost, recovered, lost again...
        drive_core(&[1, 255, 0, 255, 0, 255, 0, 255, 0, 255, 0, 255]);
        let mut with_recovery = chunked(&bytes);
        with_recovery[0] |= 1;
        drive_core(&with_recovery);
    }

    /// The committed seeds with rising delivery tags, three deliveries a chunk, run clean: the
    /// acks the core coalesces never cover a delivery the application holds. (With the check
    /// in `Unsettled::settle` removed, seed `a` fails.)
    #[test]
    fn rising_tag_seeds_coalesce_acks_safely() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/client_core");
        let seeds = [
            "deliveries-rising-tags-a",
            "deliveries-rising-tags-b",
            "deliveries-rising-tags-c",
            // A hostile broker's lower tag after the application's own ack-multiple: the
            // check itself once took that ack for a coalescing bug.
            "regression-lower-tag-after-app-multiple-ack",
            "regression-delivery-tag-max",
        ];
        for seed in seeds {
            let path = format!("{dir}/{seed}");
            match std::fs::read(&path) {
                Ok(data) => drive_core(&data),
                Err(err) => amqp_test_support::skip_or_fail(&format!(
                    "{path}: {err} (the fuzz corpus is not beside this crate)"
                )),
            }
        }
    }
}
