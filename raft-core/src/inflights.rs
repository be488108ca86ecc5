//! The bounded window of append messages sent to one follower and not yet acknowledged.

use std::collections::VecDeque;

/// In-flight appends to one follower, bounded by count and by bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// `(last index in the message, bytes in the message)`, oldest first.
    window: VecDeque<(u64, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    /// An empty window holding at most `max_count` messages and `max_bytes` bytes.
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        Inflights {
            window: VecDeque::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Records a sent message whose last entry is `last_index`.
    pub fn add(&mut self, last_index: u64, bytes: u64) {
        debug_assert!(
            self.window.back().is_none_or(|(i, _)| *i < last_index),
            "inflights must increase"
        );
        self.window.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is at or below `index`.
    pub fn free_to(&mut self, index: u64) {
        while let Some(&(last, bytes)) = self.window.front() {
            if last > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest message in flight (if any).
    pub fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.window.pop_front() {
            self.bytes -= bytes;
        }
    }

    /// True when no more messages may be sent.
    pub fn is_full(&self) -> bool {
        self.window.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    /// Number of messages in flight.
    #[allow(dead_code)]
    pub fn count(&self) -> usize {
        self.window.len()
    }

    /// Bytes in flight.
    #[allow(dead_code)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Forgets every message.
    pub fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounded_by_count_and_bytes() {
        let mut w = Inflights::new(3, 100);
        w.add(1, 10);
        w.add(2, 10);
        assert!(!w.is_full());
        w.add(5, 10);
        assert!(w.is_full());
        w.free_to(2);
        assert_eq!(w.count(), 1);
        assert!(!w.is_full());
        w.add(6, 95);
        assert!(w.is_full(), "bytes bound");
        w.free_first_one();
        assert_eq!((w.count(), w.bytes()), (1, 95));
        w.free_to(100);
        assert_eq!((w.count(), w.bytes()), (0, 0));
        w.free_first_one();
        assert_eq!((w.count(), w.bytes()), (0, 0), "nothing to free");
    }
}
