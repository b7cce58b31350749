//! A bounded queue from one thread to another that hands items over in batches.
//!
//! `std::sync::mpsc::sync_channel` wakes the other side for every item: when the receiver is
//! the slower side, the queue stays full and every item it takes wakes the blocked sender, so
//! each item costs two context switches (four `futex` calls per file in a `get -r` of 10,000
//! small files). Here the receiver takes everything queued at once, and a blocked sender is
//! woken once per batch; a waiting receiver is woken by the item that ends its wait. Items
//! still go over one at a time and in order: nothing waits for a batch to fill.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

struct State<T> {
    items: VecDeque<T>,
    /// The sender was dropped: the receiver takes what is left, then stops.
    sender_gone: bool,
    /// The receiver was dropped: sending fails.
    receiver_gone: bool,
    sender_waiting: bool,
    receiver_waiting: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when an item comes or the sender goes.
    filled: Condvar,
    /// Signalled when the receiver took the queue or went.
    emptied: Condvar,
    capacity: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Neither side panics while holding the lock; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side.
pub struct Sender<T>(Arc<Shared<T>>);

/// The receiving side.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue holding at most `capacity` items (at least one) that are not yet taken.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::with_capacity(capacity.max(1)),
            sender_gone: false,
            receiver_gone: false,
            sender_waiting: false,
            receiver_waiting: false,
        }),
        filled: Condvar::new(),
        emptied: Condvar::new(),
        capacity: capacity.max(1),
    });
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while the queue is full. `Err(item)` when the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        let shared = &self.0;
        let mut state = shared.lock();
        while state.items.len() >= shared.capacity && !state.receiver_gone {
            state.sender_waiting = true;
            state = shared
                .emptied
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state.sender_waiting = false;
        if state.receiver_gone {
            return Err(item);
        }
        state.items.push_back(item);
        if state.receiver_waiting {
            state.receiver_waiting = false;
            shared.filled.notify_one();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.sender_gone = true;
        self.0.filled.notify_one();
    }
}

impl<T> Receiver<T> {
    /// Waits for items and moves all that are queued to the end of `into`: `false` once the
    /// sender is gone and nothing is left.
    pub fn take(&self, into: &mut VecDeque<T>) -> bool {
        let shared = &self.0;
        let mut state = shared.lock();
        while state.items.is_empty() && !state.sender_gone {
            state.receiver_waiting = true;
            state = shared.filled.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.receiver_waiting = false;
        if state.items.is_empty() {
            return false;
        }
        into.append(&mut state.items);
        if state.sender_waiting {
            state.sender_waiting = false;
            shared.emptied.notify_one();
        }
        true
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.items.clear();
        self.0.emptied.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_arrives_once_and_in_order() {
        let (tx, rx) = bounded(4);
        let sender = std::thread::spawn(move || {
            for i in 0..10_000u32 {
                tx.send(i).unwrap();
            }
        });
        let (mut got, mut batch) = (Vec::new(), VecDeque::new());
        let mut batches = 0;
        while rx.take(&mut batch) {
            batches += 1;
            assert!(batch.len() <= 4, "more than the capacity at once");
            got.extend(batch.drain(..));
        }
        sender.join().unwrap();
        assert_eq!(got, (0..10_000).collect::<Vec<_>>());
        assert!(batches <= 10_000);
    }

    #[test]
    fn one_take_empties_a_full_queue_and_frees_the_waiting_sender() {
        let (tx, rx) = bounded(8);
        for i in 0..8u32 {
            tx.send(i).unwrap();
        }
        // The queue is full: this one waits until the receiver takes the queue.
        let sender = std::thread::spawn(move || tx.send(8).map(|()| tx));
        let mut batch = VecDeque::new();
        assert!(rx.take(&mut batch));
        assert_eq!(batch, (0..8).collect::<Vec<_>>(), "all eight at once");
        let tx = sender.join().unwrap().unwrap();
        drop(tx);
        batch.clear();
        assert!(rx.take(&mut batch));
        assert_eq!(batch, [8]);
        batch.clear();
        assert!(!rx.take(&mut batch));
    }

    #[test]
    fn sending_to_a_dropped_receiver_fails_even_when_the_sender_was_waiting() {
        let (tx, rx) = bounded(1);
        tx.send(1).unwrap();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(rx);
        });
        // Waits (the queue is full) until the receiver goes.
        assert_eq!(tx.send(2), Err(2));
        dropper.join().unwrap();
        assert_eq!(tx.send(3), Err(3));
    }

    #[test]
    fn what_was_sent_before_the_sender_went_is_still_taken() {
        let (tx, rx) = bounded(4);
        tx.send("a").unwrap();
        tx.send("b").unwrap();
        drop(tx);
        let mut batch = VecDeque::new();
        assert!(rx.take(&mut batch));
        assert_eq!(batch, ["a", "b"]);
        batch.clear();
        assert!(!rx.take(&mut batch));
        assert!(batch.is_empty());
    }
}
