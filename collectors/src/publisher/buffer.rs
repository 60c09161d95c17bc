//! The bounded offline buffer: messages waiting for the broker, oldest dropped first.

use std::collections::VecDeque;

/// One MQTT message: an EXAMON topic and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic, already EXAMON-encoded.
    pub topic: String,
    /// The payload bytes, e.g. `value;timestamp`.
    pub payload: Vec<u8>,
}

/// A FIFO of at most `capacity` messages; pushing onto a full buffer drops the oldest.
#[derive(Debug)]
pub(crate) struct OfflineBuffer {
    queue: VecDeque<Message>,
    capacity: usize,
    dropped: u64,
}

impl OfflineBuffer {
    /// An empty buffer holding at most `capacity` (at least 1) messages.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            // Grows on demand: a connected publisher rarely holds more than a batch.
            queue: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            dropped: 0,
        }
    }

    /// Appends a message, dropping the oldest one if the buffer is full.
    pub(crate) fn push(&mut self, message: Message) {
        if self.queue.len() == self.capacity {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(message);
    }

    /// Puts messages that were taken but not delivered back at the front, in their order;
    /// being the oldest, they are the first dropped if that overflows the buffer.
    pub(crate) fn requeue(&mut self, messages: impl DoubleEndedIterator<Item = Message>) {
        for message in messages.rev() {
            self.queue.push_front(message);
        }
        let excess = self.queue.len().saturating_sub(self.capacity);
        self.queue.drain(..excess);
        self.dropped += excess as u64;
    }

    /// Takes up to `max` of the oldest messages.
    pub(crate) fn take(&mut self, max: usize) -> Vec<Message> {
        let n = max.min(self.queue.len());
        self.queue.drain(..n).collect()
    }

    /// Messages waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Messages dropped so far because the buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}
