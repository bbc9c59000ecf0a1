//! What the core tells whoever runs it, as it happens: the reply to a request, a waiting task
//! to wake, the end of the handshake or of a close, a change of state.
//!
//! The core owns no runtime: it never holds a waker, a channel sender or a notifier. A task
//! that must wait for the core (a consumer stream, a confirm, `wait_for_confirms`) is named to
//! it by a [`WaiterId`], a number the layer above hands out and maps to the task's waker; a
//! request is named by the [`RequestId`] the core returns for it. The core queues [`Event`]s;
//! the layer above drains them ([`Core::poll_event`](super::Core::poll_event)) after every call
//! and turns each into a wake-up, a reply on a channel, or a notification. Tests drain them
//! by hand, without a runtime.

use std::collections::VecDeque;

use super::ConnectionState;
use super::channel::Reply;
use crate::error::Error;

/// A request the core queued, whose reply comes as [`Event::Reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RequestId(pub(crate) u64);

/// A task waiting on the core, as the layer above numbers it. Woken by [`Event::Wake`]; a
/// wake-up for a number since given to another task is spurious, which a task tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct WaiterId(pub(crate) u32);

/// Something the layer above must act on.
#[derive(Debug)]
pub(crate) enum Event {
    /// The answer to a request: its reply, or why it failed.
    Reply {
        /// Which request.
        request: RequestId,
        /// The reply or the error.
        result: Result<Reply, Error>,
    },
    /// A task's wait is over (a delivery arrived, a confirm resolved, a stream ended): wake it
    /// so that it polls again.
    Wake(WaiterId),
    /// The handshake of the current transport ended: open, or why not.
    Opened(Result<(), Error>),
    /// A close the application asked for is complete (or the connection ended anyway).
    Closed,
    /// connection.update-secret was answered, or failed.
    SecretUpdated(Result<(), Error>),
    /// Publishers held by back-pressure may try again (room in the outbound queue, flow on,
    /// unblocked, or the connection or channel ended).
    PublishersMayProceed,
    /// The broker blocked publishing (`Some(reason)`) or unblocked it.
    Blocked(Option<String>),
    /// Where the connection stands changed.
    State(ConnectionState),
    /// The transport is gone with this error, and the connection was not closing: the layer
    /// above decides, by its recovery policy, whether the channels are suspended for a new
    /// transport ([`Core::suspend`](super::Core::suspend)) or fail
    /// ([`Core::fail_all`](super::Core::fail_all)). Until then nothing waiting has failed.
    Lost(Error),
}

/// The core's queue of events, in the order they happened.
#[derive(Debug, Default)]
pub(crate) struct Events {
    queue: VecDeque<Event>,
}

impl Events {
    /// Queues an event.
    #[inline]
    pub(crate) fn push(&mut self, event: Event) {
        self.queue.push_back(event);
    }

    /// Queues the answer to `request`.
    pub(crate) fn reply(&mut self, request: RequestId, result: Result<Reply, Error>) {
        self.push(Event::Reply { request, result });
    }

    /// Queues a wake-up for `waiter`, if there is one.
    #[inline]
    pub(crate) fn wake(&mut self, waiter: Option<WaiterId>) {
        if let Some(w) = waiter {
            self.push(Event::Wake(w));
        }
    }

    /// The oldest event not yet taken.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    /// True when nothing is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
