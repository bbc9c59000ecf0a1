//! [`Feed`]: the queue a pool's runners take their work from, with wakes rationed the way
//! tokio's scheduler rations them.
//!
//! A queued item wakes an idle taker only if no other taker was woken and has not come back
//! to the queue yet (the *searching* one, which takes the item or passes the wake on); a
//! taker that takes an item with more behind it wakes one more. Together they keep one
//! invariant: while items wait and a taker is idle, one taker is on its way. So slow or
//! blocking work spreads over every taker, while a stream of quick items is taken by whoever
//! is already awake, with no wake per item.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// A queue of `T` shared by a fixed set of takers.
pub(crate) struct Feed<T> {
    /// The queue and who waits on it; a `std` mutex, never held across an await.
    state: Mutex<FeedState<T>>,
    /// Idle takers wait here; woken one at a time, or all by [`close`](Self::close).
    work: Notify,
}

/// What [`Feed::state`] guards.
struct FeedState<T> {
    /// Items no taker has taken, oldest first.
    items: VecDeque<T>,
    /// Takers registered on [`Feed::work`] and not woken yet: how many a wake can reach.
    idle: usize,
    /// A taker was woken and is not back at the queue yet: while one is on its way, a new
    /// item wakes nobody else.
    searching: bool,
    /// Set by [`Feed::close`]: takers get `None` instead of waiting.
    closed: bool,
    /// Wakes sent, for the tests that hold the rationing to its promise.
    #[cfg(test)]
    wakes: usize,
}

impl<T> Feed<T> {
    /// An empty, open queue.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(FeedState {
                items: VecDeque::new(),
                idle: 0,
                searching: false,
                closed: false,
                #[cfg(test)]
                wakes: 0,
            }),
            work: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState<T>> {
        // Every update under the lock is one step that cannot panic halfway: a poisoned
        // lock still guards a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes one idle taker if items wait, there is one to wake, and none is on its way.
    fn wake_one_if_needed(&self, state: &mut FeedState<T>) {
        if !state.items.is_empty() && !state.searching && state.idle > 0 {
            state.idle -= 1;
            state.searching = true;
            #[cfg(test)]
            {
                state.wakes += 1;
            }
            self.work.notify_one();
        }
    }

    /// Queues `item`, waking a taker if needed; after [`close`](Self::close) it is handed back.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        self.wake_one_if_needed(&mut state);
        Ok(())
    }

    /// The oldest item, waiting while there is none; `None` once closed.
    ///
    /// Not to be dropped while it waits: the wake accounting (`idle`, `searching`) would
    /// count a taker that is gone. The pool's runners await it to the end.
    pub(crate) async fn next(&self) -> Option<T> {
        let mut woken = false;
        loop {
            let mut notified = pin!(self.work.notified());
            {
                let mut state = self.lock();
                if woken {
                    // This taker was the one on its way (or the queue closed).
                    state.searching = false;
                }
                if state.closed {
                    return None;
                }
                if let Some(item) = state.items.pop_front() {
                    self.wake_one_if_needed(&mut state);
                    return Some(item);
                }
                // Registered under the lock: a push, which takes it, counts this taker in
                // `idle` only once a `notify_one` can reach it.
                notified.as_mut().enable();
                state.idle += 1;
            }
            notified.await;
            woken = true;
        }
    }

    /// Takes every queued item.
    pub(crate) fn take_all(&self) -> VecDeque<T> {
        std::mem::take(&mut self.lock().items)
    }

    /// Closes the queue: waiting takers get `None`, and so does every later
    /// [`next`](Self::next). Returns what was queued.
    pub(crate) fn close(&self) -> VecDeque<T> {
        let queued = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.items)
        };
        self.work.notify_waiters();
        queued
    }
}

#[cfg(test)]
mod tests {
    // A test's failure is a panic.
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use super::Feed;

    fn wakes<T>(feed: &Feed<T>) -> usize {
        feed.lock().wakes
    }

    /// Lets every spawned task run until it waits (the current-thread runtime runs them all
    /// in this yield's turn).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Spawns `n` takers that report each item they take, the one taking `blocks_on` then
    /// waiting for good.
    fn spawn_takers(
        feed: &Arc<Feed<u32>>,
        n: usize,
        blocks_on: Option<u32>,
    ) -> tokio::sync::mpsc::UnboundedReceiver<u32> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..n {
            let (feed, tx) = (feed.clone(), tx.clone());
            tokio::spawn(async move {
                while let Some(item) = feed.next().await {
                    tx.send(item).unwrap();
                    if Some(item) == blocks_on {
                        std::future::pending::<()>().await;
                    }
                }
            });
        }
        rx
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_taker_that_keeps_up_costs_no_wake_per_item() {
        let feed = Arc::new(Feed::<u32>::new());
        for i in 0..100 {
            feed.push(i).unwrap();
        }
        let mut taken = Vec::new();
        for _ in 0..100 {
            taken.push(feed.next().await.unwrap());
        }
        assert_eq!(taken, (0..100).collect::<Vec<_>>(), "oldest first");
        assert_eq!(wakes(&feed), 0, "nobody waited, nobody was woken");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_wakes_one_idle_taker_which_passes_the_wake_on() {
        let feed = Arc::new(Feed::<u32>::new());
        let mut rx = spawn_takers(&feed, 4, None);
        settle().await;
        assert_eq!(feed.lock().idle, 4, "every taker waits");
        for i in 0..50 {
            feed.push(i).unwrap();
        }
        // Pushed while one woken taker is on its way: that one wake only.
        assert_eq!(wakes(&feed), 1);
        settle().await;
        let mut got: Vec<u32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..50).collect::<Vec<_>>(), "every item taken once");
        // Each woken taker found more behind its item and woke the next: at most one per
        // taker, not one per item.
        assert!(wakes(&feed) <= 4, "{} wakes for 50 items", wakes(&feed));
        assert!(!feed.lock().searching);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_item_that_waits_hands_the_queue_to_another_taker() {
        let feed = Arc::new(Feed::<u32>::new());
        // Item 0 blocks its taker for good, as a handler waiting on a slow service.
        let mut started = spawn_takers(&feed, 2, Some(0));
        settle().await;
        feed.push(0).unwrap();
        feed.push(1).unwrap();
        settle().await;
        let started: Vec<u32> = std::iter::from_fn(|| started.try_recv().ok()).collect();
        assert_eq!(
            started,
            [0, 1],
            "item 1 did not wait behind the blocked item 0"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn close_ends_waiting_takers_and_refuses_new_items() {
        let feed = Arc::new(Feed::<u32>::new());
        let takers: Vec<_> = (0..3)
            .map(|_| {
                let feed = feed.clone();
                tokio::spawn(async move { feed.next().await })
            })
            .collect();
        settle().await;
        // Every taker waits on an empty queue: closing hands back nothing and wakes them all.
        let queued = feed.close();
        assert!(queued.is_empty());
        for taker in takers {
            let ended = tokio::time::timeout(Duration::from_secs(5), taker).await;
            assert_eq!(ended.unwrap().unwrap(), None, "a waiting taker ends");
        }
        assert_eq!(feed.push(7), Err(7), "a closed queue hands the item back");
        assert_eq!(feed.next().await, None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn close_returns_what_no_taker_took() {
        let feed = Feed::<u32>::new();
        feed.push(1).unwrap();
        feed.push(2).unwrap();
        assert_eq!(feed.next().await, Some(1));
        assert_eq!(Vec::from(feed.close()), [2]);
    }
}
