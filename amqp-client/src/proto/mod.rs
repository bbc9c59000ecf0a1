//! The sans-IO connection core: bytes in, frames out, time passed as an argument, events
//! handed up.
//!
//! [`Core`] owns the decoder, the outbound queue and the channel table. It never touches a
//! socket, a clock or a runtime: the driver feeds it what it read ([`Core::handle_input`]) and
//! the current time ([`Core::handle_timeout`]), and takes what it must write
//! ([`Core::take_output`]); handles call its operations (`ops.rs`) under the connection's
//! mutex. What the layer above must act on (a reply, a task to wake, the end of the handshake,
//! the loss of the transport) comes out as [`Event`]s ([`Core::poll_event`]); the core holds
//! no waker, no channel, no notifier. Tests drive it with byte strings, made-up instants and
//! by draining its events.
//!
//! | file | what it does |
//! |---|---|
//! | `input.rs` | frames in: connection methods, channel frames, content assembly |
//! | `handshake.rs` | start, secure, tune, open |
//! | `close.rs` | how the connection ends: peer violations, losses, closes |
//! | `ops.rs` | what handles ask: open, request, publish, settle, poll, close |
//! | `suspend.rs` | keeping channels across a lost transport, for the recovery layer |
//! | `channel/` | one channel: its requests, consumers, confirms, returns, close |
//! | `consumers.rs`, `confirms.rs`, `unsettled.rs`, `window.rs` | per-channel bookkeeping |
//! | `events.rs` | the events and the ids that name requests and waiting tasks |
//! | `outcomes.rs` | the public types the core produces: connection state, confirmation, return |

mod channel;
mod close;
mod confirms;
mod consumers;
mod events;
mod handshake;
mod input;
mod ops;
mod outcomes;
mod suspend;
mod unsettled;
mod window;

use std::time::{Duration, Instant};

use amqp_codec::table::FieldTable;
use amqp_codec::{FrameBatch, FrameDecoder, Outbound};

pub(crate) use channel::{ChannelState, DeliveryTally, Reply, Status};
pub(crate) use close::truncate_short;
pub(crate) use consumers::{DeliveryParts, Dropped, RawDelivery};
pub(crate) use events::{Event, Events, RequestId, WaiterId};
pub(crate) use ops::Publish;
pub use outcomes::{Confirmation, ConnectionState, ReturnedMessage};

use crate::config::ConnectionConfig;
use crate::error::Error;

/// Where the connection stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Protocol header sent; waiting for connection.start.
    AwaitStart,
    /// start-ok sent; waiting for secure or tune.
    AwaitTune,
    /// tune-ok and open sent; waiting for open-ok.
    AwaitOpenOk,
    /// Open for business.
    Open,
    /// We sent connection.close; waiting for close-ok (frames other than close and close-ok
    /// are discarded). The error is what the connection ends with.
    Closing(Error),
    /// Finished; every call fails with this error.
    Closed(Error),
}

/// The connection's state.
#[derive(Debug)]
pub(crate) struct Core {
    /// Settings: credentials, requested tune values, limits.
    pub(crate) config: ConnectionConfig,
    /// Lifecycle.
    pub(crate) phase: Phase,
    /// Splits the inbound byte stream into frames.
    decoder: FrameDecoder,
    /// Frames split off a read and not handled yet, because a full consumer's buffer paused
    /// reading in the middle of them: handled before anything else once it drains.
    input_left: Option<FrameBatch>,
    /// Frames waiting for the driver to write.
    pub(crate) out: Outbound,
    /// What the layer above must act on, in order.
    pub(crate) events: Events,
    /// Negotiated frame-max for what we send (0: no limit).
    pub(crate) frame_max: u32,
    /// Negotiated highest channel id.
    channel_max: u16,
    /// Negotiated heartbeat interval, if any.
    heartbeat: Option<Duration>,
    /// When a frame last arrived (liveness).
    last_recv: Instant,
    /// When the driver last took output (idleness, for sending heartbeats).
    last_send: Instant,
    /// End of the handshake, or of the wait for close-ok.
    deadline: Option<Instant>,
    /// Channels by id (index 0 unused); kept after close until the id is reused so that late
    /// handles still find their error.
    channels: Vec<Option<ChannelState>>,
    /// Counter distinguishing openings of the same channel id.
    next_epoch: u64,
    /// Where the search for a free id starts (ids are handed out round-robin, so a closed
    /// channel's id is not reused at once).
    next_id: u16,
    /// Counter naming requests (their replies come as events).
    next_request: u64,
    /// Consumers whose buffer is full; reading pauses while non-zero.
    full_consumers: usize,
    /// [`Core::ack_window`] as last computed; `None` once stale (see `window.rs`).
    window_cache: Option<Option<u32>>,
    /// connection.secure rounds answered in this handshake (bounded: see `handshake.rs`).
    secure_rounds: u8,
    /// basic.deliver frames received since the connection was made (read batching's bytes
    /// per delivery).
    deliveries_received: u64,
    /// What channels no longer in the table did with deliveries they could not hand over
    /// (see [`Core::delivery_stats`]).
    retired_tally: DeliveryTally,
    /// What channels no longer in the table did with messages, and the recoveries made (see
    /// [`Core::message_stats`]).
    retired_messages: crate::MessageStats,
    /// connection.blocked reason, while blocked.
    blocked: Option<String>,
    /// What the broker said about itself in connection.start.
    pub(crate) server_properties: FieldTable,
    /// The current transport's handshake has not ended yet: its end is reported once, as
    /// [`Event::Opened`].
    awaiting_open: bool,
    /// The application asked to close: the end of the close is reported as [`Event::Closed`].
    close_requested: bool,
    /// An update-secret waits for its ok ([`Event::SecretUpdated`]).
    secret_pending: bool,
    /// A publisher waits for back-pressure to lift ([`Event::PublishersMayProceed`] is sent
    /// only then, not on every write).
    publishers_waiting: bool,
    /// True from the loss of a transport until recovery finished or gave up: application
    /// calls fail with (or wait on) `Error::Recovering`, channels are suspended.
    pub(crate) recovering: bool,
    /// The application closed the connection (or dropped its last handle): never recover.
    app_closed: bool,
}

impl Core {
    /// A connection about to start: the protocol header is queued.
    pub(crate) fn new(config: ConnectionConfig, now: Instant) -> Self {
        let mut core = Self {
            decoder: FrameDecoder::with_frame_max(0),
            input_left: None,
            out: Outbound::new(),
            events: Events::default(),
            frame_max: 0,
            channel_max: 0,
            heartbeat: None,
            last_recv: now,
            last_send: now,
            deadline: None,
            channels: Vec::new(),
            next_epoch: 1,
            next_id: 1,
            next_request: 1,
            full_consumers: 0,
            window_cache: None,
            secure_rounds: 0,
            deliveries_received: 0,
            retired_tally: DeliveryTally::default(),
            retired_messages: crate::MessageStats::default(),
            blocked: None,
            server_properties: FieldTable::default(),
            awaiting_open: true,
            close_requested: false,
            secret_pending: false,
            publishers_waiting: false,
            phase: Phase::AwaitStart,
            recovering: false,
            app_closed: false,
            config,
        };
        core.start_transport(now);
        core
    }

    /// A new transport begins (the first, or one recovery made): a fresh decoder and
    /// outbound queue with the protocol header, pre-tune limits, the handshake deadline.
    fn start_transport(&mut self, now: Instant) {
        let initial_max = match self.config.frame_max {
            0 => 131_072,
            n => n,
        };
        self.decoder = FrameDecoder::with_frame_max(initial_max);
        self.input_left = None;
        self.out = Outbound::new();
        self.out.push_protocol_header();
        self.frame_max = initial_max;
        self.channel_max = 0;
        self.heartbeat = None;
        self.last_recv = now;
        self.last_send = now;
        self.deadline = Some(now + self.config.connection_timeout);
        self.full_consumers = 0;
        self.secure_rounds = 0;
        self.awaiting_open = true;
        self.phase = Phase::AwaitStart;
    }

    /// The next event for the layer above, oldest first.
    #[inline]
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// A fresh request id.
    fn next_request(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// True when frames are queued that the driver has not taken yet (see `Shared::queue`).
    pub(crate) fn has_queued_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The octets from the front of `buf` to the end of the first frame not all there, once
    /// that frame's header is there: the frames a batch left in the buffer (a delivery awaiting
    /// its body: its method, and its header if that came) and the frame begun after them, so
    /// that the driver makes room for the body frame, not for the small method frame in front
    /// of it (64 KiB bodies: 1.75 body sizes allocated per message when it did). A header the
    /// decoder would refuse gives `None`: it is refused when decoded.
    pub(crate) fn next_frame_len(&self, buf: &[u8]) -> Option<usize> {
        let mut offset = 0;
        for _ in 0..3 {
            let len = self
                .decoder
                .next_frame_len(buf.get(offset..)?)
                .ok()
                .flatten()?;
            offset += len;
            if offset > buf.len() {
                return Some(offset);
            }
        }
        None
    }

    /// Moves queued output into `into` (the driver's write buffer) if that one is drained.
    /// Returns true if there is anything to write.
    pub(crate) fn take_output(&mut self, into: &mut Outbound, now: Instant) -> bool {
        if into.is_empty() && !self.out.is_empty() {
            std::mem::swap(into, &mut self.out);
            self.last_send = now;
            // Room in the queue again: publishers held by the high-water mark may go on.
            self.wake_publishers();
        }
        !into.is_empty()
    }

    /// Reports that publishers may retry, if any waits.
    fn wake_publishers(&mut self) {
        if std::mem::take(&mut self.publishers_waiting) {
            self.events.push(Event::PublishersMayProceed);
        }
    }

    /// Deliveries not simply handed over, over every channel this connection had.
    pub(crate) fn delivery_stats(&self) -> crate::DeliveryStats {
        let mut tally = self.retired_tally;
        for chan in self.channels.iter().flatten() {
            tally.add(&chan.tally);
        }
        crate::DeliveryStats {
            unreadable: tally.unreadable,
            orphans_requeued: tally.orphans_requeued,
            orphans_ignored: tally.orphans_ignored,
        }
    }

    /// What every channel this connection had did with messages, and its recoveries.
    pub(crate) fn message_stats(&self) -> crate::MessageStats {
        let mut stats = self.retired_messages;
        for chan in self.channels.iter().flatten() {
            stats.add(&chan.messages);
        }
        stats
    }

    /// True while a full consumer buffer holds up reading.
    pub(crate) fn read_paused(&self) -> bool {
        self.full_consumers > 0
    }

    /// True once the connection is over and the driver may drop the socket (after writing
    /// what is queued, such as a close-ok).
    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Closed(_))
    }

    /// The error every call gets once the connection is no longer open (or while it is being
    /// recovered).
    pub(crate) fn closed_error(&self) -> Option<Error> {
        if self.recovering {
            return Some(Error::Recovering);
        }
        self.phase_error()
    }

    /// The error of the connection's own lifecycle, recovery aside.
    fn phase_error(&self) -> Option<Error> {
        match &self.phase {
            Phase::Open => None,
            Phase::Closing(err) | Phase::Closed(err) => Some(err.clone()),
            _ => Some(Error::InvalidUse("the connection is not open yet")),
        }
    }

    /// True once the application closed the connection (it is never recovered then).
    pub(crate) fn app_closed(&self) -> bool {
        self.app_closed
    }

    /// Recounts the consumers whose full buffer holds up reading.
    fn recount_full(&mut self) {
        self.full_consumers = self
            .channels
            .iter()
            .flatten()
            .filter(|c| !c.is_closed())
            .flat_map(|c| c.consumers.values())
            .filter(|s| s.is_full() && !s.is_ended())
            .count();
    }
}

#[cfg(test)]
mod ack_tests;
#[cfg(any(test, feature = "internals"))]
pub(crate) mod harness;
#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod poison_tests;
#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod stats_tests;
#[cfg(test)]
mod tests;
