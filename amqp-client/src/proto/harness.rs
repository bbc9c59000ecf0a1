//! The core driven without sockets and without a runtime: a scripted broker's bytes in, the
//! client's frames out, time made up, and the core's events drained by hand, as `Shared`
//! would, with the recovery layer's decision applied to a lost transport.
//!
//! Like quinn-proto's `Pair`, it is the one way tests, the fuzz target (`fuzzing.rs`) and the
//! profiling loops (`profiling.rs`) run the core: what they exercise is the same code the
//! async layer calls, and no runtime is involved. Several harnesses run side by side for
//! several connections.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use amqp_codec::methods::{ChannelOpenOk, ConnectionOpenOk, ConnectionStart, ConnectionTune};
use amqp_codec::{Frame, FrameDecoder, LongStr, Method, Outbound};
use bytes::{Buf, BytesMut};

use super::{ConnectionState, Core, Event, Phase, Reply, RequestId, WaiterId};
use crate::config::ConnectionConfig;
use crate::error::Error;
use crate::recovery::{self, Recovery};

/// A core plus the scripted broker's view of it.
#[derive(Debug)]
pub(crate) struct Harness {
    /// The core under test.
    pub(crate) core: Core,
    /// The recovery layer's state, as `Shared` keeps it (when the config turns recovery on).
    pub(crate) recovery: Option<Recovery>,
    /// The made-up clock.
    pub(crate) now: Instant,
    /// Replies that came and were not taken yet, by request.
    replies: HashMap<RequestId, Result<Reply, Error>>,
    /// The end of the last handshake, once reported.
    pub(crate) opened: Option<Result<(), Error>>,
    /// True once a close the application asked for finished.
    pub(crate) closed: bool,
    /// The answer to the last update-secret.
    pub(crate) secret: Option<Result<(), Error>>,
    /// Tasks woken, in order (cleared by whoever checks them).
    pub(crate) woken: Vec<WaiterId>,
    /// Every state reported, in order.
    pub(crate) states: Vec<ConnectionState>,
    /// Every blocked state reported, in order.
    pub(crate) blocked: Vec<Option<String>>,
    /// Decodes what the client wrote.
    decoder: FrameDecoder,
    /// Bytes the client wrote, not decoded yet.
    wire: BytesMut,
}

impl Harness {
    /// A harness on a fresh core with `config`.
    pub(crate) fn new(config: ConnectionConfig) -> Self {
        let now = Instant::now();
        let recovery = config.recovery.clone().map(Recovery::new);
        Self {
            core: Core::new(config, now),
            recovery,
            now,
            replies: HashMap::new(),
            opened: None,
            closed: false,
            secret: None,
            woken: Vec::new(),
            states: Vec::new(),
            blocked: Vec::new(),
            decoder: FrameDecoder::with_frame_max(u32::MAX),
            wire: BytesMut::new(),
        }
    }

    /// Acts on the core's events as `Shared` does: replies and wake-ups are recorded, and a
    /// lost transport goes to the recovery layer's decision.
    pub(crate) fn drain(&mut self) {
        #[cfg(test)]
        self.check_ack_window();
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Reply { request, result } => {
                    self.replies.insert(request, result);
                }
                Event::Wake(waiter) => self.woken.push(waiter),
                Event::Opened(result) => self.opened = Some(result),
                Event::Closed => self.closed = true,
                Event::SecretUpdated(result) => self.secret = Some(result),
                Event::PublishersMayProceed => {}
                Event::Blocked(reason) => self.blocked.push(reason),
                Event::State(state) => self.states.push(state),
                Event::Lost(err) => recovery::on_lost(&mut self.core, self.recovery.as_mut(), &err),
            }
        }
    }

    /// Checks that the core's cached ack window (if not stale) agrees with a scan over the
    /// channels, then fills the cache: a change to a channel's status, consumers or prefetch
    /// that forgot to mark it stale fails the test at the next step.
    #[cfg(test)]
    fn check_ack_window(&mut self) {
        if let Some(cached) = self.core.cached_ack_window() {
            assert_eq!(
                cached,
                self.core.scan_ack_window(),
                "the cached ack window went stale unnoticed"
            );
        }
        self.core.ack_window();
    }

    /// The reply to `request`, once it came (taken).
    pub(crate) fn reply(&mut self, request: RequestId) -> Option<Result<Reply, Error>> {
        self.drain();
        self.replies.remove(&request)
    }

    /// Feeds raw bytes from the "broker".
    pub(crate) fn feed_bytes(&mut self, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        self.core.handle_input(&mut buf, self.now);
        self.drain();
    }

    /// Feeds one method from the "broker".
    pub(crate) fn feed(&mut self, channel: u16, method: Method) {
        let mut out = Outbound::new();
        if out.push_method(channel, &method, 0).is_ok() {
            let bytes = out.copy_to_bytes(out.remaining());
            self.feed_bytes(&bytes);
        }
    }

    /// The broker delivers `delivery_tag` (body "x") to `consumer` on `channel`.
    #[cfg(test)]
    pub(crate) fn deliver(&mut self, channel: u16, consumer: &'static str, delivery_tag: u64) {
        let mut out = Outbound::new();
        let m = Method::BasicDeliver(amqp_codec::methods::BasicDeliver {
            consumer_tag: amqp_codec::ShortStr::from_static(consumer),
            delivery_tag,
            ..Default::default()
        });
        let props = amqp_codec::BasicProperties::default();
        if out.push_content(channel, &m, &props, "x".into(), 0).is_ok() {
            let bytes = out.copy_to_bytes(out.remaining());
            self.feed_bytes(&bytes);
        }
    }

    /// Lets the made-up clock run on by `by`, and the core see it.
    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.core.handle_timeout(self.now);
        self.drain();
    }

    /// Collects and decodes what the client queued since the last call.
    pub(crate) fn sent(&mut self) -> Vec<Frame> {
        let mut out = Outbound::new();
        self.core.take_output(&mut out, self.now);
        self.drain();
        self.wire
            .extend_from_slice(&out.copy_to_bytes(out.remaining()));
        if self.wire.starts_with(b"AMQP") {
            self.wire.advance(8);
        }
        let mut frames = Vec::new();
        while let Ok(Some(f)) = self.decoder.decode(&mut self.wire) {
            frames.push(f);
        }
        frames
    }

    /// The methods the client queued since the last call.
    #[cfg(test)]
    pub(crate) fn methods(&mut self) -> Vec<Method> {
        self.sent()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Method { method, .. } => Some(method),
                _ => None,
            })
            .collect()
    }

    /// The broker's side of the handshake, proposing `heartbeat` seconds: start, tune
    /// (channel-max 2047, frame-max 128 KiB), open-ok.
    pub(crate) fn open(&mut self, heartbeat: u16) {
        self.feed(0, start());
        let tune = ConnectionTune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat,
        };
        self.feed(0, Method::ConnectionTune(tune));
        self.feed(0, Method::ConnectionOpenOk(ConnectionOpenOk::default()));
        debug_assert!(matches!(self.core.phase, Phase::Open));
        self.sent();
    }

    /// Opens a channel (the broker answers open-ok) and drains the client's output; the
    /// application's, so recovery (if on) keeps it. `None` if the core refuses.
    pub(crate) fn try_channel(&mut self) -> Option<(u16, u64)> {
        let (id, epoch, request) = self.core.open_channel().ok()?;
        self.feed(id, Method::ChannelOpenOk(ChannelOpenOk::default()));
        self.reply(request)?.ok()?;
        if let Some(r) = self.recovery.as_mut() {
            r.topology.record_channel(id);
        }
        self.sent();
        Some((id, epoch))
    }

    /// [`try_channel`](Self::try_channel), for tests where the core must accept.
    #[cfg(test)]
    pub(crate) fn channel(&mut self) -> (u16, u64) {
        self.try_channel().expect("the core opens a channel")
    }

    /// Queues `method` on a channel, for tests where the core must accept it; its request.
    #[cfg(test)]
    pub(crate) fn request(&mut self, (id, epoch): (u16, u64), method: Method) -> RequestId {
        let request = self
            .core
            .request(id, epoch, method)
            .expect("the core queues it");
        self.drain();
        request
    }

    /// Sends `request` on a channel and feeds the broker's `reply`, recording a topology
    /// change as the handles do; the reply the core matched it with.
    pub(crate) fn call(
        &mut self,
        (id, epoch): (u16, u64),
        request: Method,
        reply: Method,
    ) -> Option<Result<Reply, Error>> {
        let kept = request.clone();
        let sent = self.core.request(id, epoch, request).ok()?;
        self.feed(id, reply);
        let answer = self.reply(sent)?;
        if let (Ok(answer), Some(r)) = (&answer, self.recovery.as_mut()) {
            r.topology.record(id, &kept, Some(answer.method()));
        }
        Some(answer)
    }
}

/// The broker's connection.start (PLAIN and AMQPLAIN offered).
pub(crate) fn start() -> Method {
    Method::ConnectionStart(ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: Default::default(),
        mechanisms: LongStr::from("AMQPLAIN PLAIN"),
        locales: LongStr::from("en_US"),
    })
}

/// The borrowed publish arguments of a basic.publish method (tests and loops build the method).
pub(crate) fn args_of(method: &Method) -> amqp_codec::PublishArgs<'_> {
    match method {
        Method::BasicPublish(p) => amqp_codec::PublishArgs {
            exchange: &p.exchange,
            routing_key: &p.routing_key,
            mandatory: p.mandatory,
            immediate: p.immediate,
        },
        _ => amqp_codec::PublishArgs::new(b"", b""),
    }
}
