//! A bounded many-producer, single-consumer queue filled and drained in batches: the
//! inbox's two lanes. Compared with a channel, the stream readers hand over every frame
//! that arrived together as one batch and the consumer takes many items under one lock,
//! so a burst of messages costs one wake-up instead of one per message.
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
    async fn batches_drain_in_order_up_to_the_limit() {
        let (tx, mut rx) = bounded::<u32>(8);
        assert!(tx.push_batch(&mut vec![0, 1]).await);
        assert!(tx.push_batch(&mut vec![2]).await);
        let mut out = Vec::new();
        assert_eq!(rx.drain(2, |v| out.push(v)).await, 2);
        assert_eq!(rx.try_pop(), Some(2));
        assert_eq!(out, vec![0, 1]);
        assert_eq!(rx.try_pop(), None);
    }

    #[tokio::test]
    async fn a_batch_may_overshoot_capacity_once_then_producers_wait() {
        let (tx, mut rx) = bounded::<u32>(2);
        let mut batch = vec![1, 2, 3];
        assert!(tx.push_batch(&mut batch).await);
        assert!(batch.is_empty());
        let waiter = tokio::spawn(async move {
            assert!(tx.push_batch(&mut vec![4]).await);
            tx
        });
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "a full queue makes the producer wait"
        );
        let mut out = Vec::new();
        rx.try_drain(usize::MAX, |v| out.push(v));
        let tx = waiter.await.unwrap();
        rx.try_drain(usize::MAX, |v| out.push(v));
        assert_eq!(out, vec![1, 2, 3, 4]);
        drop(tx);
        assert!(!rx.ready().await);
    }

    #[tokio::test]
    async fn closing_either_side_is_seen_by_the_other() {
        let (tx, mut rx) = bounded::<u32>(4);
        let tx2 = tx.clone();
        assert!(tx.push_batch(&mut vec![7]).await);
        drop(tx);
        assert!(tx2.push_batch(&mut vec![8]).await);
        drop(tx2);
        let mut out = Vec::new();
        assert_eq!(rx.drain(10, |v| out.push(v)).await, 2);
        assert!(rx.is_closed());
        assert_eq!(rx.drain(10, |v| out.push(v)).await, 0);

        let (tx, rx) = bounded::<u32>(1);
        assert!(tx.push_batch(&mut vec![1]).await);
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.push_batch(&mut vec![2]).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(
            !blocked.await.unwrap(),
            "the consumer's departure releases producers"
        );
        assert!(!tx.push_batch(&mut vec![3]).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_up_between_check_and_wait_is_not_lost() {
        let (tx, mut rx) = bounded::<u64>(256);
        let producer = tokio::spawn(async move {
            let mut next = 0u64;
            while next < 100_000 {
                let mut batch: Vec<u64> = (next..(next + 1 + next % 7).min(100_000)).collect();
                next += batch.len() as u64;
                assert!(tx.push_batch(&mut batch).await);
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
