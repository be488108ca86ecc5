//! A bounded many-producer, single-consumer queue drained in batches.
//!
//! The transport's per-peer outbound queues and its inbox are instances. Compared with a
//! channel it lets the consumer take everything waiting under one lock, and producers hand
//! over whole batches, so a burst of messages costs one wake-up instead of one per message.
//!
//! Closing: the queue closes when the last [`Producer`] is dropped (the consumer then
//! drains what is left and sees the end) or when the consumer is dropped (producers get
//! their item back).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

struct State<T> {
    items: VecDeque<T>,
    consumer_alive: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Live producers; counted outside the lock so cloning one stays cheap.
    producers: AtomicUsize,
    capacity: usize,
    /// Wakes the consumer: items arrived or the last producer left. Single consumer, so
    /// `notify_one`'s stored permit makes a wake-up between its check and its wait safe.
    items: Notify,
    /// Wakes producers waiting for room, or for the consumer's departure.
    space: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why an item was not queued; the item is handed back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The consumer is gone.
    Closed(T),
}

/// Creates a queue holding at most `capacity` items (at least 1).
pub(crate) fn bounded<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            consumer_alive: true,
        }),
        producers: AtomicUsize::new(1),
        capacity: capacity.max(1),
        items: Notify::new(),
        space: Notify::new(),
    });
    (
        Producer {
            shared: shared.clone(),
        },
        Consumer { shared },
    )
}

/// The sending side; clone it for more producers.
pub(crate) struct Producer<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        self.shared.producers.fetch_add(1, Ordering::Relaxed);
        Producer {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // AcqRel: the consumer that sees 0 also sees every item pushed before.
        if self.shared.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.items.notify_one();
        }
    }
}

impl<T> Producer<T> {
    /// Queues `item` unless the queue is full or closed.
    pub(crate) fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        let was_empty = {
            let mut st = self.shared.lock();
            if !st.consumer_alive {
                return Err(PushError::Closed(item));
            }
            if st.items.len() >= self.shared.capacity {
                return Err(PushError::Full(item));
            }
            st.items.push_back(item);
            st.items.len() == 1
        };
        // The consumer only sleeps on an empty queue, so only the first item wakes it.
        if was_empty {
            self.shared.items.notify_one();
        }
        Ok(())
    }

    /// Queues `item`, waiting while the queue is full. `Err(item)` if the consumer is gone.
    pub(crate) async fn push(&self, item: T) -> Result<(), T> {
        let mut item = item;
        loop {
            let room = self.shared.space.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(item) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(back)) => return Err(back),
                Err(PushError::Full(back)) => item = back,
            }
            room.await;
        }
    }

    /// Appends every item of `batch` (emptying it), waiting while the queue is full; a
    /// batch may take the queue past its capacity by up to its own length. `false` if the
    /// consumer is gone.
    pub(crate) async fn push_batch(&self, batch: &mut Vec<T>) -> bool {
        if batch.is_empty() {
            return true;
        }
        loop {
            let room = self.shared.space.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let was_empty = {
                let mut st = self.shared.lock();
                if !st.consumer_alive {
                    return false;
                }
                if st.items.len() < self.shared.capacity {
                    let was_empty = st.items.is_empty();
                    st.items.extend(batch.drain(..));
                    Some(was_empty)
                } else {
                    None
                }
            };
            match was_empty {
                Some(was_empty) => {
                    if was_empty {
                        self.shared.items.notify_one();
                    }
                    return true;
                }
                None => room.await,
            }
        }
    }
}

/// The receiving side.
pub(crate) struct Consumer<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        let items = {
            let mut st = self.shared.lock();
            st.consumer_alive = false;
            std::mem::take(&mut st.items)
        };
        // Dropped outside the lock: an item's destructor may touch the queue.
        drop(items);
        self.shared.space.notify_waiters();
    }
}

impl<T> Consumer<T> {
    /// Hands up to `limit` waiting items, oldest first, to `take` without waiting;
    /// returns how many.
    pub(crate) fn try_drain(&mut self, limit: usize, mut take: impl FnMut(T)) -> usize {
        let (n, was_full) = {
            let mut st = self.shared.lock();
            let was_full = st.items.len() >= self.shared.capacity;
            let n = st.items.len().min(limit);
            st.items.drain(..n).for_each(&mut take);
            (n, was_full)
        };
        // Producers wait only on a full queue.
        if was_full && n > 0 {
            self.shared.space.notify_waiters();
        }
        n
    }

    /// Takes one waiting item, if any.
    pub(crate) fn try_pop(&mut self) -> Option<T> {
        let mut one = None;
        self.try_drain(1, |item| one = Some(item));
        one
    }

    /// Whether every producer is gone (items may still be waiting).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.producers.load(Ordering::Acquire) == 0
    }

    /// Moves every waiting item into `into`, which must be empty, without waiting (the two
    /// buffers are swapped, so no item is moved one by one).
    pub(crate) fn take_all(&mut self, into: &mut VecDeque<T>) {
        debug_assert!(into.is_empty());
        let was_full = {
            let mut st = self.shared.lock();
            let was_full = st.items.len() >= self.shared.capacity;
            std::mem::swap(&mut st.items, into);
            was_full
        };
        if was_full {
            self.shared.space.notify_waiters();
        }
    }

    /// Waits until an item is queued or every producer is gone. `false` in the latter case
    /// once the queue is empty.
    pub(crate) async fn ready(&mut self) -> bool {
        loop {
            {
                // Producers first: once it reads 0, every push happened before the check
                // of the items below.
                let closed = self.is_closed();
                if !self.shared.lock().items.is_empty() {
                    return true;
                }
                if closed {
                    return false;
                }
            }
            self.shared.items.notified().await;
        }
    }

    /// Waits for at least one item, then hands up to `limit` to `take`. 0 once every
    /// producer is gone and the queue is empty.
    #[cfg(test)]
    async fn drain(&mut self, limit: usize, mut take: impl FnMut(T)) -> usize {
        loop {
            if !self.ready().await {
                return 0;
            }
            let n = self.try_drain(limit, &mut take);
            if n > 0 {
                return n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_drops_when_full_and_drains_in_order() {
        let (tx, mut rx) = bounded::<u32>(3);
        for i in 0..3 {
            tx.try_push(i).unwrap();
        }
        assert_eq!(tx.try_push(9), Err(PushError::Full(9)));
        let mut out = Vec::new();
        assert_eq!(rx.drain(2, |v| out.push(v)).await, 2);
        assert_eq!(rx.try_pop(), Some(2));
        assert_eq!(out, vec![0, 1]);
        assert_eq!(rx.try_pop(), None);
    }

    #[tokio::test]
    async fn push_waits_for_room() {
        let (tx, mut rx) = bounded::<u32>(1);
        tx.try_push(1).unwrap();
        let waiter = tokio::spawn(async move {
            tx.push(2).await.unwrap();
            tx
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(rx.try_pop(), Some(1));
        let tx = waiter.await.unwrap();
        assert_eq!(rx.try_pop(), Some(2));
        drop(tx);
        assert!(!rx.ready().await);
    }

    #[tokio::test]
    async fn batch_push_may_overshoot_capacity_once() {
        let (tx, mut rx) = bounded::<u32>(2);
        let mut batch = vec![1, 2, 3];
        assert!(tx.push_batch(&mut batch).await);
        assert!(batch.is_empty());
        assert_eq!(tx.try_push(4), Err(PushError::Full(4)));
        let mut out = Vec::new();
        rx.drain(usize::MAX, |v| out.push(v)).await;
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn closing_either_side_is_seen_by_the_other() {
        let (tx, mut rx) = bounded::<u32>(4);
        let tx2 = tx.clone();
        tx.try_push(7).unwrap();
        drop(tx);
        tx2.try_push(8).unwrap();
        drop(tx2);
        let mut out = Vec::new();
        assert_eq!(rx.drain(10, |v| out.push(v)).await, 2);
        assert!(rx.is_closed());
        assert_eq!(rx.drain(10, |v| out.push(v)).await, 0);

        let (tx, rx) = bounded::<u32>(1);
        tx.try_push(1).unwrap();
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.push(2).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(blocked.await.unwrap(), Err(2));
        assert_eq!(tx.try_push(3), Err(PushError::Closed(3)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_up_between_check_and_wait_is_not_lost() {
        let (tx, mut rx) = bounded::<u64>(1024);
        let producer = tokio::spawn(async move {
            for i in 0..100_000u64 {
                tx.push(i).await.unwrap();
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut out = Vec::new();
        let mut expected = 0;
        loop {
            out.clear();
            if rx.drain(500, |v| out.push(v)).await == 0 {
                break;
            }
            for v in &out {
                assert_eq!(*v, expected);
                expected += 1;
            }
        }
        producer.await.unwrap();
        assert_eq!(expected, 100_000);
    }
}
