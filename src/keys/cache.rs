//! What this process keeps of merchant keys — the unwrapped keys, and each merchant's
//! live key row — bounded in count and in time: a KMS is asked once per key per
//! time-to-live, a row is read again after its own, and nothing stays in memory for ever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `capacity` entries, each for at most `ttl`.
pub struct KeyCache<V> {
    capacity: usize,
    ttl: Duration,
    entries: Mutex<HashMap<String, (V, Instant)>>,
}

impl<V: Clone> KeyCache<V> {
    /// An empty cache.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (V, Instant)>> {
        // A panic while holding the lock leaves a map that is still a valid cache.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry `id`, if it is cached and not expired.
    pub fn get(&self, id: &str) -> Option<V> {
        let mut entries = self.entries();
        match entries.get(id) {
            Some((value, at)) if at.elapsed() < self.ttl => Some(value.clone()),
            Some(_) => {
                entries.remove(id);
                None
            }
            None => None,
        }
    }

    /// Caches `value` as `id`, from now.
    pub fn put(&self, id: &str, value: V) {
        self.put_at(id, value, Instant::now());
    }

    /// Caches `value` as `id`, as of `at` (when it was read). A full cache first drops its
    /// expired entries, then, if it is still full, the oldest.
    pub fn put_at(&self, id: &str, value: V, at: Instant) {
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(id) {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(id.to_owned(), (value, at));
    }

    /// Forgets the entry `id`.
    pub fn remove(&self, id: &str) {
        self.entries().remove(id);
    }

    /// Drops the expired entries.
    pub fn purge_expired(&self) {
        let ttl = self.ttl;
        self.entries().retain(|_, (_, at)| at.elapsed() < ttl);
    }

    /// Forgets every key.
    pub fn clear(&self) {
        self.entries().clear();
    }

    /// Keys held now (expired ones included until they are next looked at).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Keyring, MasterKey};

    fn key(id: &str) -> Keyring {
        Keyring::merchant(MasterKey::generate(id).unwrap())
    }

    #[test]
    fn holds_at_most_its_capacity_dropping_the_oldest() {
        let cache = KeyCache::new(2, Duration::from_secs(60));
        cache.put("a", key("a"));
        std::thread::sleep(Duration::from_millis(2));
        cache.put("b", key("b"));
        cache.put("c", key("c"));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a").is_none(), "the oldest went");
        assert_eq!(cache.get("b").unwrap().current_id(), "b");
        assert_eq!(cache.get("c").unwrap().current_id(), "c");
    }

    #[test]
    fn forgets_a_key_after_its_time_to_live() {
        let cache = KeyCache::new(10, Duration::from_millis(20));
        cache.put("a", key("a"));
        assert!(cache.get("a").is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get("a").is_none());
        assert!(cache.is_empty());
    }
}
