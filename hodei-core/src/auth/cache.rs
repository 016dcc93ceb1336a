//! A small map whose entries expire, with a fixed bound on its size.

use std::{collections::HashMap, hash::Hash, time::Duration};

use parking_lot::Mutex;
use tokio::time::Instant;

/// Entries live for `ttl`; at `capacity`, expired entries go first, then arbitrary ones.
#[derive(Debug)]
pub(crate) struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock();
        match entries.get(key) {
            Some((at, value)) if at.elapsed() < self.ttl => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            while entries.len() >= self.capacity {
                let Some(victim) = entries.keys().next().cloned() else {
                    break;
                };
                entries.remove(&victim);
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let cache = TtlCache::new(Duration::from_secs(10), 4);
        cache.insert(1, "a");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(cache.get(&1), Some("a"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(&1), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_size_never_passes_the_capacity() {
        let cache = TtlCache::new(Duration::from_secs(10), 3);
        for key in 0..3 {
            cache.insert(key, key);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        cache.insert(10, 10);
        assert_eq!(cache.len(), 1, "expired entries are dropped first");
        for key in 20..30 {
            cache.insert(key, key);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.get(&29), Some(29), "the newest entry is kept");
    }
}
