//! A peer lane's send queue, holding frames already encoded.
//!
//! [`Transport::send`](crate::Transport::send) encodes a message straight onto the end of
//! the queue's buffer, in the caller's thread; the lane's writer takes the whole buffer
//! at once and hands it to quinn. So a message is encoded once and never moved between
//! threads as an object (the message is freed by its sender; only its bytes travel); a
//! burst of messages becomes one stream write and one wake-up of the writer.
//!
//! The queue is bounded by a number of frames; a full queue refuses (the transport drops
//! and counts) rather than blocking, unless the caller chooses to wait.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::Notify;

use crate::frame;

/// Size of the buffer frames are encoded into...
const BUFFER_BYTES: usize = 256 * 1024;
/// ...and the room left below which a new one is started (a larger frame grows it).
const MIN_SPARE_BYTES: usize = 64 * 1024;

struct Pending {
    /// Encoded frames, length prefixes included, oldest first. Taken with
    /// `split().freeze()`, so once quinn has released what was taken (the peer
    /// acknowledged it) the next frames reuse the same allocation.
    bytes: BytesMut,
    /// Number of frames in `bytes`.
    frames: usize,
    /// Set by `close`: no frame is accepted after it.
    closed: bool,
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The queue holds its capacity of frames.
    Full,
    /// The queue was closed (peer removed, transport shut down).
    Closed,
    /// The message did not encode within the frame limit.
    Encode(String),
}

/// Frames waiting to be written to one lane of one peer.
pub(crate) struct FrameQueue {
    pending: Mutex<Pending>,
    capacity: usize,
    max_frame: usize,
    /// Wakes the writer when the queue stops being empty, or closes.
    ready: Notify,
    /// Wakes callers waiting for room.
    space: Notify,
}

impl FrameQueue {
    /// A queue of at most `capacity` frames (at least 1) of at most `max_frame` bytes.
    pub(crate) fn new(capacity: usize, max_frame: usize) -> Self {
        FrameQueue {
            pending: Mutex::new(Pending {
                bytes: BytesMut::new(),
                frames: 0,
                closed: false,
            }),
            capacity: capacity.max(1),
            max_frame,
            ready: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Encodes `msg` onto the queue unless it is full or closed.
    pub(crate) fn try_push<T: Serialize>(&self, msg: &T) -> Result<(), QueueError> {
        let first = {
            let mut p = self.lock();
            // Checked under the lock that `close` takes: nothing lands after the close.
            if p.closed {
                return Err(QueueError::Closed);
            }
            if p.frames >= self.capacity {
                return Err(QueueError::Full);
            }
            if p.bytes.capacity() - p.bytes.len() < MIN_SPARE_BYTES {
                // Reuses the buffer if quinn has released every chunk taken from it,
                // else starts a new one.
                p.bytes.reserve(BUFFER_BYTES);
            }
            frame::encode_into(msg, &mut p.bytes, self.max_frame).map_err(QueueError::Encode)?;
            p.frames += 1;
            p.frames == 1
        };
        // The writer sleeps only on an empty queue, so only the first frame wakes it.
        if first {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Like [`FrameQueue::try_push`], but waits while the queue is full.
    pub(crate) async fn push<T: Serialize>(&self, msg: &T) -> Result<(), QueueError> {
        loop {
            let room = self.space.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(msg) {
                Err(QueueError::Full) => room.await,
                other => return other,
            }
        }
    }

    /// Closes the queue: pushes fail from now on and the writer stops once it has taken
    /// what is left.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.space.notify_waiters();
    }

    /// Waits until frames are queued (`true`) or the queue is closed and empty (`false`).
    /// For the single writer of the queue.
    pub(crate) async fn ready(&self) -> bool {
        loop {
            {
                let p = self.lock();
                if p.frames > 0 {
                    return true;
                }
                if p.closed {
                    return false;
                }
            }
            // A frame pushed after the check stores a permit, so this cannot miss it.
            self.ready.notified().await;
        }
    }

    /// Takes every queued frame, without copying, and says how many there were.
    pub(crate) fn take_all(&self) -> (Bytes, usize) {
        let (bytes, frames) = {
            let mut p = self.lock();
            let bytes = p.bytes.split().freeze();
            (bytes, std::mem::take(&mut p.frames))
        };
        if frames >= self.capacity {
            self.space.notify_waiters();
        }
        (bytes, frames)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn decode_all(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
            out.push(frame::decode(&bytes[4..4 + len]).unwrap());
            bytes = &bytes[4 + len..];
        }
        out
    }

    #[tokio::test]
    async fn frames_queue_in_order_and_a_full_queue_refuses() {
        let q = FrameQueue::new(2, 100);
        q.try_push(&vec![1u8]).unwrap();
        q.try_push(&vec![2u8, 2]).unwrap();
        assert_eq!(q.try_push(&vec![3u8]), Err(QueueError::Full));
        assert!(q.ready().await);
        let (taken, n) = q.take_all();
        assert_eq!(n, 2);
        assert_eq!(decode_all(&taken), vec![vec![1u8], vec![2, 2]]);
        q.try_push(&vec![4u8]).unwrap();
        let (next, n) = q.take_all();
        assert_eq!(n, 1);
        assert_eq!(decode_all(&next), vec![vec![4u8]]);
        assert_eq!(
            decode_all(&taken),
            vec![vec![1u8], vec![2, 2]],
            "taken bytes stay put"
        );
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_and_leaves_the_queue_intact() {
        let q = FrameQueue::new(8, 16);
        q.try_push(&vec![1u8; 4]).unwrap();
        assert!(matches!(
            q.try_push(&vec![0u8; 100]),
            Err(QueueError::Encode(_))
        ));
        let (taken, n) = q.take_all();
        assert_eq!(n, 1);
        assert_eq!(decode_all(&taken), vec![vec![1u8; 4]]);
    }

    #[tokio::test]
    async fn push_waits_for_room_and_close_releases_everyone() {
        let q = Arc::new(FrameQueue::new(1, 100));
        q.try_push(&vec![1u8]).unwrap();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.push(&vec![2u8]).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        q.take_all();
        waiter.await.unwrap().unwrap();

        let blocked = tokio::spawn({
            let q = q.clone();
            async move { q.push(&vec![3u8]).await }
        });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(blocked.await.unwrap(), Err(QueueError::Closed));
        // What was queued before the close is still handed to the writer, then the end.
        assert!(q.ready().await);
        assert_eq!(q.take_all().1, 1);
        assert!(!q.ready().await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_wake_up_is_lost_between_producer_and_writer() {
        let q = Arc::new(FrameQueue::new(64, 100));
        let producer = tokio::spawn({
            let q = q.clone();
            async move {
                for i in 0..50_000u32 {
                    q.push(&i).await.unwrap();
                }
                q.close();
            }
        });
        let mut next = 0u32;
        while q.ready().await {
            let (buf, _) = q.take_all();
            let mut bytes = &buf[..];
            while !bytes.is_empty() {
                let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
                let v: u32 = frame::decode(&bytes[4..4 + len]).unwrap();
                assert_eq!(v, next);
                next += 1;
                bytes = &bytes[4 + len..];
            }
        }
        producer.await.unwrap();
        assert_eq!(next, 50_000);
    }
}
