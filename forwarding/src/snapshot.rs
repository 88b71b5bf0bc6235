//! Where immutable snapshots (the FIB, the neighbour table) are published to the workers.
//!
//! Readers load the current snapshot without a lock and hold it for one batch. The writer
//! swaps in a new one. An old snapshot is freed by the writer, never by a reader: the swap
//! hands it back to the writer, which keeps it on a retired list while a reader still holds
//! it and drops it at a later publish. Were a reader to drop the last reference, the worker
//! would free megabytes of tables in the middle of forwarding, and could wait on the
//! allocator's lock while the control thread builds the next snapshot.

use arc_swap::{ArcSwap, Guard};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
struct Shared<T> {
    current: ArcSwap<T>,
    /// Replaced snapshots that readers still held when they were replaced. Only publishers
    /// take this lock.
    retired: Mutex<Vec<Arc<T>>>,
}

/// A publication point: cheap to clone, shared by one writer and any number of readers.
#[derive(Debug)]
pub struct Published<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Published<T> {
    fn clone(&self) -> Self {
        Published { shared: Arc::clone(&self.shared) }
    }
}

impl<T: Default> Default for Published<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> Published<T> {
    pub fn new(first: T) -> Self {
        Published {
            shared: Arc::new(Shared { current: ArcSwap::from_pointee(first), retired: Mutex::new(Vec::new()) }),
        }
    }

    /// Replaces the snapshot atomically; readers switch at their next load. Frees the
    /// replaced snapshots no reader holds any more.
    pub fn publish(&self, next: T) {
        let old = self.shared.current.swap(Arc::new(next));
        // A poisoned lock only means a publisher panicked while holding it; the list is
        // still a list.
        let mut retired = self.shared.retired.lock().unwrap_or_else(|e| e.into_inner());
        // `swap` has settled every reader's claim on `old` into its count, so a count of one
        // is ours alone. Whatever is dropped here is freed on this thread.
        retired.retain(|s| Arc::strong_count(s) > 1);
        if Arc::strong_count(&old) > 1 {
            retired.push(old);
        }
    }

    /// The current snapshot; hold it for one batch, not longer.
    #[inline]
    pub fn load(&self) -> Guard<Arc<T>> {
        self.shared.current.load()
    }

    /// Replaced snapshots not yet freed (held by readers at the last publish).
    pub fn retired(&self) -> usize {
        self.shared.retired.lock().map_or(0, |r| r.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the threads that drop it.
    struct Tracked {
        dropped_by_writer: Arc<AtomicUsize>,
        dropped_elsewhere: Arc<AtomicUsize>,
        writer: std::thread::ThreadId,
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            let c = if std::thread::current().id() == self.writer {
                &self.dropped_by_writer
            } else {
                &self.dropped_elsewhere
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_reader_never_frees_a_snapshot_and_the_writer_frees_each_once() {
        let (by_writer, elsewhere) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let make = || Tracked {
            dropped_by_writer: Arc::clone(&by_writer),
            dropped_elsewhere: Arc::clone(&elsewhere),
            writer: std::thread::current().id(),
        };
        let p = Published::new(make());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loads = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (p, stop, loads) = (p.clone(), Arc::clone(&stop), Arc::clone(&loads));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let g = p.load();
                        std::hint::black_box(&g.writer);
                        // Hold it across the writer's swaps now and then.
                        if loads.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        // Publish until the readers have been at it for a while, whatever the scheduler does.
        let (mut publishes, mut held) = (0, 0);
        while publishes < 20_000 || loads.load(Ordering::Relaxed) < 200_000 {
            p.publish(make());
            publishes += 1;
            held = held.max(p.retired());
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().expect("reader");
        }
        assert_eq!(elsewhere.load(Ordering::Relaxed), 0, "a reader freed a snapshot");
        assert!(held > 0, "no reader ever held a snapshot across a publish: the test tested nothing");
        // Readers are gone: the next publish frees every retired one.
        p.publish(make());
        assert_eq!(p.retired(), 0);
        assert_eq!(by_writer.load(Ordering::Relaxed), publishes + 1, "each replaced snapshot freed once");
        drop(p);
        assert_eq!(by_writer.load(Ordering::Relaxed), publishes + 2);
    }
}
