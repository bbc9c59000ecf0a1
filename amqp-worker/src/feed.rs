//! [`Feed`]: the queue a pool's runners take their work from, with wakes rationed the way
//! tokio's scheduler rations them.
//!
//! A queued item wakes an idle taker only if no other taker was woken and has not come back
//! to the queue yet (the *searching* one, which takes the item or passes the wake on); a
//! taker that takes an item with more behind it wakes one more. Together they keep one
//! invariant: while items wait and a taker is idle, one taker is on its way. So slow or
//! blocking work spreads over every taker, while a stream of quick items is taken by whoever
//! is already awake, with no wake per item.
//!
//! Items come with a *context* (for the pool: the session they belong to), set once for all
//! the items that follow rather than carried by each: a taker keeps the context of its last
//! item and clones it only when it changed. Carried by each item, it cost a reference-count
//! increment where items are pushed and a decrement where they are settled, on a cache line
//! both runtime threads write, per item.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// A queue of `T`, each with the context `C` current when it was pushed, shared by a fixed
/// set of takers.
pub(crate) struct Feed<T, C = ()> {
    /// The queue and who waits on it; a `std` mutex, never held across an await.
    state: Mutex<FeedState<T, C>>,
    /// Idle takers wait here; woken one at a time, or all by [`close`](Self::close).
    work: Notify,
}

/// What [`Feed::take`] found.
enum Taken<'s, T, C> {
    /// The oldest item is in the taker's slot; this is its context.
    Item(Arc<C>),
    /// The queue is closed.
    Closed,
    /// Nothing queued: the lock, still held.
    Empty(MutexGuard<'s, FeedState<T, C>>),
}

/// What [`Feed::state`] guards.
struct FeedState<T, C> {
    /// Items no taker has taken, oldest first, all pushed under `context`.
    items: VecDeque<T>,
    /// The context of every queued item; `None` until the first
    /// [`start_context`](Feed::start_context), and no item is queued without one.
    context: Option<Arc<C>>,
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

impl<T, C> Feed<T, C> {
    /// An empty, open queue, with no context yet: items are refused until one is started.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(FeedState {
                items: VecDeque::new(),
                context: None,
                idle: 0,
                searching: false,
                closed: false,
                #[cfg(test)]
                wakes: 0,
            }),
            work: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState<T, C>> {
        // Every update under the lock is one step that cannot panic halfway: a poisoned
        // lock still guards a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes one idle taker if items wait, there is one to wake, and none is on its way.
    fn wake_one_if_needed(&self, state: &mut FeedState<T, C>) {
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

    /// Items pushed from now on belong to `context`. Returns the items still queued under the
    /// previous one, which no taker may now take with the wrong context.
    pub(crate) fn start_context(&self, context: Arc<C>) -> VecDeque<T> {
        let mut state = self.lock();
        state.context = Some(context);
        std::mem::take(&mut state.items)
    }

    /// Queues `item` under the current context, waking a taker if needed; handed back after
    /// [`close`](Self::close), or before any context was started.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.closed || state.context.is_none() {
            return Err(item);
        }
        state.items.push_back(item);
        self.wake_one_if_needed(&mut state);
        Ok(())
    }

    /// Moves the oldest item into `slot` (which must be empty), waiting while there is none,
    /// and returns its context; `None` once closed. `held` is the context the taker kept from
    /// its last item: replaced (cloned) only if this item's is another.
    ///
    /// The item goes straight into the taker's `slot`: returned by value, it was copied four
    /// times on its way out of the async fn (callgrind, with the pool's ~200-byte items).
    ///
    /// Not to be dropped while it waits: the wake accounting (`idle`, `searching`) would
    /// count a taker that is gone. The pool's runners await it to the end.
    pub(crate) async fn next<'h>(
        &self,
        held: &'h mut Option<Arc<C>>,
        slot: &mut Option<T>,
    ) -> Option<&'h Arc<C>> {
        let mut woken = false;
        loop {
            // First without a waiter: most takes find an item, and making and dropping a
            // `Notified` cost ~45 instructions each (callgrind).
            {
                let mut state = self.lock();
                if std::mem::take(&mut woken) {
                    // This taker was the one on its way (or the queue closed).
                    state.searching = false;
                }
                match self.take(state, held, slot) {
                    Taken::Item(context) => return Some(held.insert(context)),
                    Taken::Closed => return None,
                    // Unlocked: the waiter is made, then the queue is looked at again.
                    Taken::Empty(guard) => drop(guard),
                }
            }
            let mut notified = pin!(self.work.notified());
            {
                let state = self.lock();
                let mut state = match self.take(state, held, slot) {
                    Taken::Item(context) => return Some(held.insert(context)),
                    Taken::Closed => return None,
                    Taken::Empty(state) => state,
                };
                // Registered under the lock: a push, which takes it, counts this taker in
                // `idle` only once a `notify_one` can reach it.
                notified.as_mut().enable();
                state.idle += 1;
            }
            notified.await;
            woken = true;
        }
    }

    /// Moves the oldest item into `slot` and returns its context (`held` if it is the same,
    /// taken out of it), or why there is none; on an item the lock is released before
    /// `held`'s old context drops.
    fn take<'s>(
        &self,
        mut state: MutexGuard<'s, FeedState<T, C>>,
        held: &mut Option<Arc<C>>,
        slot: &mut Option<T>,
    ) -> Taken<'s, T, C> {
        if state.closed {
            return Taken::Closed;
        }
        let queue = &mut *state;
        let Some(current) = &queue.context else {
            return Taken::Empty(state);
        };
        *slot = queue.items.pop_front();
        if slot.is_none() {
            return Taken::Empty(state);
        }
        let mut replaced = None;
        let context = match held.take() {
            Some(kept) if Arc::ptr_eq(&kept, current) => kept,
            other => {
                replaced = other;
                current.clone()
            }
        };
        self.wake_one_if_needed(&mut state);
        drop(state);
        // The last reference to an old context may do work of its own (for the pool, drop a
        // publisher): not under the lock.
        drop(replaced);
        Taken::Item(context)
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

    /// An open queue with its (unit) context started.
    fn started<T>() -> Feed<T> {
        let feed = Feed::new();
        assert!(feed.start_context(Arc::new(())).is_empty());
        feed
    }

    /// The next item, its context dropped.
    async fn next<T>(feed: &Feed<T>) -> Option<T> {
        let mut slot = None;
        feed.next(&mut None, &mut slot).await?;
        slot
    }

    /// The next item and its context.
    async fn next_with<'h, T, C>(
        feed: &Feed<T, C>,
        held: &'h mut Option<Arc<C>>,
    ) -> Option<(T, &'h Arc<C>)> {
        let mut slot = None;
        let context = feed.next(held, &mut slot).await?;
        Some((slot.unwrap(), context))
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
                let mut held = None;
                while let Some((item, _)) = next_with(&*feed, &mut held).await {
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
        let feed = Arc::new(started::<u32>());
        for i in 0..100 {
            feed.push(i).unwrap();
        }
        let mut taken = Vec::new();
        for _ in 0..100 {
            taken.push(next(&feed).await.unwrap());
        }
        assert_eq!(taken, (0..100).collect::<Vec<_>>(), "oldest first");
        assert_eq!(wakes(&feed), 0, "nobody waited, nobody was woken");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_wakes_one_idle_taker_which_passes_the_wake_on() {
        let feed = Arc::new(started::<u32>());
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
        let feed = Arc::new(started::<u32>());
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
        let feed = Arc::new(started::<u32>());
        let takers: Vec<_> = (0..3)
            .map(|_| {
                let feed = feed.clone();
                tokio::spawn(async move { next(&feed).await })
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
        assert_eq!(next(&feed).await, None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn close_returns_what_no_taker_took() {
        let feed = started::<u32>();
        feed.push(1).unwrap();
        feed.push(2).unwrap();
        assert_eq!(next(&feed).await, Some(1));
        assert_eq!(Vec::from(feed.close()), [2]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_item_comes_with_the_context_it_was_pushed_under() {
        let feed = Feed::<u32, &str>::new();
        assert_eq!(feed.push(0), Err(0), "no context yet: refused");
        let first = Arc::new("first");
        assert!(feed.start_context(first.clone()).is_empty());
        feed.push(1).unwrap();
        feed.push(2).unwrap();
        let mut held = None;
        let (item, context) = next_with(&feed, &mut held).await.unwrap();
        assert_eq!((item, **context), (1, "first"));
        assert!(Arc::ptr_eq(held.as_ref().unwrap(), &first));
        // A taker that keeps the context clones nothing more.
        let kept = Arc::strong_count(&first);
        let (item, _) = next_with(&feed, &mut held).await.unwrap();
        assert_eq!(item, 2);
        assert_eq!(
            Arc::strong_count(&first),
            kept,
            "no clone for the same context"
        );
        // A new context takes back what is queued under the old one.
        feed.push(3).unwrap();
        let second = Arc::new("second");
        assert_eq!(Vec::from(feed.start_context(second.clone())), [3]);
        feed.push(4).unwrap();
        let (item, context) = next_with(&feed, &mut held).await.unwrap();
        assert_eq!((item, **context), (4, "second"));
        assert_eq!(
            Arc::strong_count(&first),
            1,
            "the feed and the taker let it go"
        );
    }
}
