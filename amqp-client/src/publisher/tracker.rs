//! The task behind a [`ReliablePublisher`](super::ReliablePublisher): it owns every
//! unconfirmed message, awaits the confirms in publish order, and settles or sends again.
//!
//! Confirms are awaited oldest first. The broker confirms in order on a channel (a multiple
//! ack or nack covers everything before), so waiting on the oldest costs nothing: by the time
//! it resolves, those after it usually have too. A message sent again goes to the back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::{PublishFailure, PublisherConfig};
use crate::confirm::PublishConfirm;
use crate::connection::Connection;
use crate::error::Error;
use crate::options::PublishOptions;
use crate::proto::Confirmation;
use crate::{Channel, ShortStr};
use amqp_codec::BasicProperties;

/// A message handed to the tracker by `publish`, with what its first send gave.
pub(super) struct Input {
    /// The message.
    pub(super) tracked: Tracked,
    /// Its confirm future, or why it could not be sent.
    pub(super) sent: Result<PublishConfirm, Error>,
}

/// One unconfirmed message: what is needed to send it again, and to answer its receipt.
pub(super) struct Tracked {
    pub(super) exchange: ShortStr,
    pub(super) routing_key: ShortStr,
    pub(super) properties: BasicProperties,
    /// Reference-counted: sending it again copies nothing.
    pub(super) body: Bytes,
    /// Nacks and channel errors met so far.
    pub(super) refusals: u32,
    /// Where the outcome goes.
    pub(super) reply: oneshot::Sender<Result<(), PublishFailure>>,
    /// The message's share of the in-flight bounds, given back when it is dropped (settled).
    pub(super) _room: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// What to do with a message after its send or confirm.
#[derive(Debug)]
pub(super) enum Next {
    /// Settled: answer the receipt.
    Settle(Result<(), PublishFailure>),
    /// Send it again (on a new channel when the old one is closed).
    Resend,
}

/// The tracking task's state.
pub(super) struct Tracker {
    conn: Connection,
    /// The publishing channel, shared with the publisher; replaced when the broker closes it.
    channel: Arc<Mutex<Channel>>,
    config: PublisherConfig,
    /// Whether the connection has automatic recovery: fixed by its configuration, so read
    /// once here rather than under the connection's lock at every confirm.
    recovers: bool,
    /// Messages from `publish`; closed when the publisher closes or is dropped.
    inputs: mpsc::UnboundedReceiver<Input>,
    /// Sent messages awaiting their confirm, oldest first.
    waiting: VecDeque<(Tracked, PublishConfirm)>,
}

impl Tracker {
    pub(super) fn new(
        conn: Connection,
        channel: Arc<Mutex<Channel>>,
        config: PublisherConfig,
        inputs: mpsc::UnboundedReceiver<Input>,
    ) -> Self {
        Self {
            recovers: conn.recovers(),
            conn,
            channel,
            config,
            inputs,
            waiting: VecDeque::new(),
        }
    }

    /// Runs until the publisher is gone and every message is settled, then closes the
    /// channel.
    pub(super) async fn run(mut self) {
        let mut open = true;
        while open || !self.waiting.is_empty() {
            let oldest = async {
                match self.waiting.front_mut() {
                    Some((_, confirm)) => Some(confirm.await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                input = self.inputs.recv(), if open => match input {
                    Some(Input { tracked, sent }) => self.after_send(tracked, sent).await,
                    None => open = false,
                },
                Some(outcome) = oldest => {
                    let Some((mut tracked, _)) = self.waiting.pop_front() else { continue };
                    let next = self.after_confirm(&mut tracked, outcome);
                    self.apply(tracked, next).await;
                }
            }
        }
        let channel = self.channel();
        let _ = channel.close().await;
    }

    /// A send went out (its confirm is awaited) or failed (judged at once).
    async fn after_send(&mut self, tracked: Tracked, sent: Result<PublishConfirm, Error>) {
        match sent {
            Ok(confirm) => self.waiting.push_back((tracked, confirm)),
            Err(err) => {
                let mut tracked = tracked;
                let next = self.after_error(&mut tracked, err);
                self.apply(tracked, next).await;
            }
        }
    }

    /// Settles `tracked`, or sends it again until a send goes out or it is settled.
    async fn apply(&mut self, mut tracked: Tracked, mut next: Next) {
        loop {
            match next {
                Next::Settle(outcome) => {
                    let _ = tracked.reply.send(outcome);
                    return;
                }
                Next::Resend => {}
            }
            let channel = match self.usable_channel().await {
                Ok(channel) => channel,
                Err(err) => {
                    next = self.after_error(&mut tracked, err);
                    continue;
                }
            };
            match send(&channel, &tracked, self.config.mandatory).await {
                Ok(confirm) => {
                    self.waiting.push_back((tracked, confirm));
                    return;
                }
                Err(err) => next = self.after_error(&mut tracked, err),
            }
        }
    }

    fn after_confirm(&self, tracked: &mut Tracked, outcome: Result<Confirmation, Error>) -> Next {
        after_confirm(&self.config, self.recovers, &mut tracked.refusals, outcome)
    }

    fn after_error(&self, tracked: &mut Tracked, err: Error) -> Next {
        after_error(&self.config, self.recovers, &mut tracked.refusals, err)
    }

    /// The publishing channel, opened anew if the broker closed it.
    async fn usable_channel(&self) -> Result<Channel, Error> {
        let channel = self.channel();
        if channel.is_open() || !self.conn.is_open() {
            // Open, or the connection is recovering (the send waits it out) or gone (the send
            // says so).
            return Ok(channel);
        }
        let fresh = open_channel(&self.conn).await?;
        *self.channel.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    fn channel(&self) -> Channel {
        self.channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A new channel of `conn` in confirm mode.
pub(super) async fn open_channel(conn: &Connection) -> Result<Channel, Error> {
    let channel = conn.open_channel().await?;
    channel.confirm_select().await?;
    Ok(channel)
}

/// Publishes `tracked` on `channel`.
pub(super) async fn send(
    channel: &Channel,
    tracked: &Tracked,
    mandatory: bool,
) -> Result<PublishConfirm, Error> {
    let options = if mandatory {
        PublishOptions::mandatory()
    } else {
        PublishOptions::default()
    };
    channel
        .basic_publish(
            &tracked.exchange,
            &tracked.routing_key,
            options,
            &tracked.properties,
            tracked.body.clone(),
        )
        .await
}

/// The rules for a confirm; `refusals` counts the message's refusals so far, `recovers` says
/// whether the connection has automatic recovery.
pub(super) fn after_confirm(
    config: &PublisherConfig,
    recovers: bool,
    refusals: &mut u32,
    outcome: Result<Confirmation, Error>,
) -> Next {
    match outcome {
        Ok(Confirmation::Acked | Confirmation::NotRequested) => Next::Settle(Ok(())),
        // Not retried: the same route would fail again.
        Ok(Confirmation::Returned(r) | Confirmation::Nacked(Some(r))) => {
            Next::Settle(Err(PublishFailure::Unroutable {
                reply_code: r.reply_code.0,
                reply_text: String::from_utf8_lossy(&r.reply_text).into_owned(),
            }))
        }
        // A nack (or an answer this version does not know): the broker did not take it.
        Ok(_) => refused(config, refusals, None),
        Err(err) => after_error(config, recovers, refusals, err),
    }
}

/// The rules for an error from a send or a confirm.
pub(super) fn after_error(
    config: &PublisherConfig,
    recovers: bool,
    refusals: &mut u32,
    err: Error,
) -> Next {
    if err.is_channel_error() && !matches!(err, Error::ChannelClosedByApp) {
        // The broker closed the channel (a missing exchange, say): a refusal; the next send
        // opens a new channel.
        return refused(config, refusals, Some(err));
    }
    let lost = matches!(err, Error::Recovering) || err.is_recoverable();
    if lost && recovers && config.republish_after_loss {
        // Sent again on the recovered connection (the send waits out the recovery).
        return Next::Resend;
    }
    // The connection ended for good, recovery is off (or republishing after a loss is), or
    // the message cannot be encoded: trying again would not help.
    Next::Settle(Err(PublishFailure::Failed(err)))
}

/// A nack (`err` None) or a channel error: sent again until the refusals run out.
fn refused(config: &PublisherConfig, refusals: &mut u32, err: Option<Error>) -> Next {
    *refusals += 1;
    if *refusals > config.max_refusals {
        return Next::Settle(Err(PublishFailure::RetriesExhausted {
            refusals: *refusals,
            last_error: err,
        }));
    }
    Next::Resend
}
