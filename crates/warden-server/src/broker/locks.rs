//! Locks by key, for changes that the store's version check cannot order on its own: the
//! issue of a credential, which runs at a target between two writes of its request, and the
//! making of an extension, a new request whose invariant ("one waits at a time", "none after a
//! revocation") spans several.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// One async lock per key, made when first taken and dropped when its last holder or waiter
/// lets go, so the map holds only keys in use.
#[derive(Debug)]
pub struct Locks<K> {
    held: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for Locks<K> {
    fn default() -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
        }
    }
}

/// Holds a key's lock until dropped.
#[derive(Debug)]
pub struct Held<'a, K: Hash + Eq + Clone> {
    locks: &'a Locks<K>,
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq + Clone> Locks<K> {
    /// Waits for `key`'s lock.
    pub async fn lock(&self, key: K) -> Held<'_, K> {
        let lock = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        Held {
            locks: self,
            key,
            guard: Some(guard),
        }
    }

    /// How many keys have a lock now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<K: Hash + Eq + Clone> Drop for Held<'_, K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = self
            .locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only the map's own reference left: no one holds or waits for this key.
        if held
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_key_and_no_key_left_behind() {
        let locks = Arc::new(Locks::<u32>::default());
        let first = locks.lock(1).await;
        let other = locks.lock(2).await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock(1).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "two holders of one key");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(locks.len(), 1);
        drop(other);
        assert_eq!(locks.len(), 0);
    }
}
