//! The store's free space as the event loop sees it: a task samples
//! [`PacketStorage::free_bytes`] on a blocking thread and publishes each
//! sample through a `watch` channel, so the loop reads the latest value
//! without ever waiting for the disk.
//!
//! Owns the sampling task only (one sample at a time, never overlapping). It
//! must not decide anything about announcements; the gossip driver does.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::debug;

use crate::packet::PacketStorage;

/// One sample of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Free allocated bytes, or `None` if the store could not say.
    pub free: Option<u64>,
    pub capacity: u64,
}

/// The latest sample, `None` until the first one arrived.
pub type SpaceWatch = watch::Receiver<Option<Space>>;

/// Starts sampling `storage` every `every`; the task ends when every
/// receiver is gone. Must be called inside a tokio runtime.
pub fn watch_space(storage: Arc<dyn PacketStorage>, every: Duration) -> SpaceWatch {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tx.closed() => break,
            }
            let storage = storage.clone();
            let sample = tokio::task::spawn_blocking(move || Space {
                free: storage.free_bytes().ok(),
                capacity: storage.capacity(),
            })
            .await;
            match sample {
                Ok(sample) => {
                    if tx.send(Some(sample)).is_err() {
                        break;
                    }
                }
                Err(err) => debug!(%err, "free-space sample failed"),
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MemoryStorage;
    use strew_coordinator::PacketId;

    #[tokio::test]
    async fn samples_follow_the_store() {
        let store = Arc::new(MemoryStorage::new(100));
        let mut space = watch_space(store.clone(), Duration::from_millis(10));
        space.changed().await.unwrap();
        assert_eq!(
            *space.borrow(),
            Some(Space {
                free: Some(100),
                capacity: 100
            })
        );
        let bytes = vec![1u8; 40];
        store.put(PacketId::of(&bytes), &bytes, 1).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while space.borrow().and_then(|s| s.free) != Some(60) {
                space.changed().await.unwrap();
            }
        })
        .await
        .expect("the new free space is published");
    }
}
