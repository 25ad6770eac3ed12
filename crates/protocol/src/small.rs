//! Tiny Vec-backed map and queue with the subset of the `BTreeMap` / `VecDeque` API the
//! client core uses. The core's collections hold a handful of entries (requests in flight,
//! channels, calls), so a linear scan is as fast as a tree, and the WASM SDK stays free of the
//! tree and ring-buffer code those generics would add for every key/value type.

use alloc::vec::Vec;
use core::borrow::Borrow;

/// An insertion-ordered map.
#[derive(Debug, Clone)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: PartialEq, V> VecMap<K, V> {
    /// An empty map.
    pub const fn new() -> Self {
        VecMap(Vec::new())
    }

    fn pos<Q: PartialEq + ?Sized>(&self, k: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
    {
        self.0.iter().position(|(key, _)| key.borrow() == k)
    }

    /// The value of `k`.
    pub fn get<Q: PartialEq + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.pos(k).map(|i| &self.0[i].1)
    }

    /// The value of `k`, mutably.
    pub fn get_mut<Q: PartialEq + ?Sized>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.pos(k).map(move |i| &mut self.0[i].1)
    }

    /// Whether `k` is present.
    pub fn contains_key<Q: PartialEq + ?Sized>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.pos(k).is_some()
    }

    /// Set `k`; returns the previous value.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.pos(&k) {
            Some(i) => Some(core::mem::replace(&mut self.0[i].1, v)),
            None => {
                self.0.push((k, v));
                None
            }
        }
    }

    /// Remove `k`.
    pub fn remove<Q: PartialEq + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.pos(k).map(|i| self.0.remove(i).1)
    }

    /// Keep the entries for which `f` is true.
    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| f(k, v));
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Entries in insertion order, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Values in insertion order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    /// All values, emptying the map.
    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.0.into_iter().map(|(_, v)| v)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A FIFO queue (front removal is O(n), fine for the few items it holds).
#[derive(Debug, Clone)]
pub struct Queue<T>(Vec<T>);

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue(Vec::new())
    }
}

impl<T> Queue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Queue(Vec::new())
    }
    /// Append.
    pub fn push_back(&mut self, t: T) {
        self.0.push(t)
    }
    /// Prepend.
    pub fn push_front(&mut self, t: T) {
        self.0.insert(0, t)
    }
    /// Take the first.
    pub fn pop_front(&mut self) -> Option<T> {
        (!self.0.is_empty()).then(|| self.0.remove(0))
    }
    /// Remove the item at `i`.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        (i < self.0.len()).then(|| self.0.remove(i))
    }
    /// Items front to back.
    pub fn iter(&self) -> core::slice::Iter<'_, T> {
        self.0.iter()
    }
    /// Items front to back, mutably.
    pub fn iter_mut(&mut self) -> core::slice::IterMut<'_, T> {
        self.0.iter_mut()
    }
    /// The first item.
    pub fn front(&self) -> Option<&T> {
        self.0.first()
    }
    /// Number of items.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> IntoIterator for Queue<T> {
    type Item = T;
    type IntoIter = alloc::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn map_and_queue() {
        let mut m: VecMap<String, u32> = VecMap::new();
        assert_eq!(m.insert("a".into(), 1), None);
        assert_eq!(m.insert("b".into(), 2), None);
        assert_eq!(m.insert("a".into(), 3), Some(1));
        assert_eq!(m.get("a"), Some(&3));
        assert!(m.contains_key("b"));
        m.retain(|_, v| *v != 2);
        assert_eq!(m.len(), 1);
        assert_eq!(m.remove("a"), Some(3));
        assert!(m.is_empty());
        let mut q = Queue::new();
        q.push_back(1);
        q.push_back(2);
        q.push_front(0);
        assert_eq!(q.pop_front(), Some(0));
        assert_eq!(q.remove(1), Some(2));
        assert_eq!(q.into_iter().collect::<Vec<_>>(), vec![1]);
    }
}
