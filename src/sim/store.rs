//! The object store: objects as JSON, a global resourceVersion, change history and watch fan-out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::meta;

/// How many changes are kept for watches resuming from an older resourceVersion.
const HISTORY: usize = 10_000;

/// Identity of a stored object: resource (`pods`, `jobs.batch`), namespace (`""` when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub resource: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub(crate) fn new(resource: &'static str, namespace: &str, name: &str) -> Key {
        Key {
            resource,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change, with the object as it is after the change (as it was last, for deletions).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub rv: u64,
    pub kind: ChangeKind,
    pub key: Key,
    pub object: Value,
    /// The object before a modification (to tell selector matches entering or leaving).
    pub previous: Option<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("conflict")]
    Conflict,
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    watchers: Vec<mpsc::UnboundedSender<Arc<Change>>>,
}

/// Changes after a resourceVersion: the recorded backlog, then live ones.
pub(crate) type Subscription = (Vec<Arc<Change>>, mpsc::UnboundedReceiver<Arc<Change>>);

pub(crate) struct Store {
    inner: Mutex<Inner>,
}

fn set_rv(obj: &mut Value, rv: u64) {
    meta::metadata_mut(obj).insert("resourceVersion".into(), json!(rv.to_string()));
}

impl Store {
    pub(crate) fn new() -> Store {
        Store {
            inner: Mutex::new(Inner {
                rv: 100,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                watchers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation below completes before it can panic-free release; a poisoned lock holds a
        // consistent map, so recover it instead of failing every later request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(
        inner: &mut Inner,
        kind: ChangeKind,
        key: Key,
        object: Value,
        previous: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: inner.rv,
            kind,
            key,
            object,
            previous,
        });
        inner.history.push_back(change.clone());
        if inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        inner.watchers.retain(|w| w.send(change.clone()).is_ok());
    }

    /// Stores a new object, assigning resourceVersion, and uid/creationTimestamp when absent.
    pub(crate) fn create(&self, key: Key, mut obj: Value) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        inner.rv += 1;
        let rv = inner.rv;
        let m = meta::metadata_mut(&mut obj);
        m.entry("uid").or_insert_with(|| json!(meta::new_uid()));
        m.entry("creationTimestamp")
            .or_insert_with(|| json!(meta::now()));
        set_rv(&mut obj, rv);
        inner.objects.insert(key.clone(), obj.clone());
        Self::record(&mut inner, ChangeKind::Added, key, obj.clone(), None);
        Ok(obj)
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Objects of one resource, in one namespace or all, and the list's resourceVersion.
    pub(crate) fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Applies `change` to the stored object. When it returns an error nothing changes; when the
    /// object is unchanged no event is emitted. `expected_rv` enforces optimistic concurrency.
    pub(crate) fn update<E>(
        &self,
        key: &Key,
        expected_rv: Option<&str>,
        change: impl FnOnce(&mut Value) -> Result<(), E>,
    ) -> Result<Result<Value, StoreError>, E> {
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(key) else {
            return Ok(Err(StoreError::NotFound));
        };
        if let Some(rv) = expected_rv.filter(|rv| !rv.is_empty())
            && meta::str_at(current, &["metadata", "resourceVersion"]) != Some(rv)
        {
            return Ok(Err(StoreError::Conflict));
        }
        let previous = current.clone();
        let mut next = current.clone();
        change(&mut next)?;
        // Identity fields are the server's, whatever the caller sent.
        for f in ["uid", "creationTimestamp", "name", "namespace"] {
            match current.pointer(&format!("/metadata/{f}")) {
                Some(v) => {
                    meta::metadata_mut(&mut next).insert(f.into(), v.clone());
                }
                None => {
                    meta::metadata_mut(&mut next).remove(f);
                }
            }
        }
        let mut probe = next.clone();
        set_rv(&mut probe, 0);
        let mut cur_probe = current.clone();
        set_rv(&mut cur_probe, 0);
        if probe == cur_probe {
            return Ok(Ok(current.clone()));
        }
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut next, rv);
        inner.objects.insert(key.clone(), next.clone());
        Self::record(
            &mut inner,
            ChangeKind::Modified,
            key.clone(),
            next.clone(),
            Some(previous),
        );
        Ok(Ok(next))
    }

    /// Removes an object, emitting DELETED with a fresh resourceVersion.
    pub(crate) fn delete(&self, key: &Key) -> Option<Value> {
        let mut inner = self.lock();
        let mut obj = inner.objects.remove(key)?;
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut obj, rv);
        Self::record(
            &mut inner,
            ChangeKind::Deleted,
            key.clone(),
            obj.clone(),
            None,
        );
        Some(obj)
    }

    /// Removes an object if `check` accepts it (both under one lock, so nothing changes it in
    /// between); `None` when there is no such object.
    pub(crate) fn delete_if<E>(
        &self,
        key: &Key,
        check: impl FnOnce(&Value) -> Result<(), E>,
    ) -> Option<Result<Value, E>> {
        let mut inner = self.lock();
        if let Err(e) = check(inner.objects.get(key)?) {
            return Some(Err(e));
        }
        let mut obj = inner.objects.remove(key)?;
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut obj, rv);
        Self::record(
            &mut inner,
            ChangeKind::Deleted,
            key.clone(),
            obj.clone(),
            None,
        );
        Some(Ok(obj))
    }

    /// Subscribes to changes after `from_rv` (`None` = from now): the backlog plus a live receiver.
    pub(crate) fn watch(&self, from_rv: Option<u64>) -> Result<Subscription, StoreError> {
        let mut inner = self.lock();
        let backlog = match from_rv {
            Some(rv) if rv < inner.rv => {
                let oldest = inner.history.front().map(|c| c.rv).unwrap_or(inner.rv + 1);
                if rv + 1 < oldest {
                    return Err(StoreError::Gone {
                        requested: rv,
                        oldest,
                    });
                }
                inner
                    .history
                    .iter()
                    .filter(|c| c.rv > rv)
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        inner.watchers.push(tx);
        Ok((backlog, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}})
    }

    #[test]
    fn create_get_update_delete_bump_versions_and_notify() {
        let s = Store::new();
        let (_, mut rx) = s.watch(None).expect("watch from now");
        let k = Key::new("pods", "default", "a");
        let created = s.create(k.clone(), pod("a")).expect("created");
        assert_eq!(
            s.create(k.clone(), pod("a")),
            Err(StoreError::AlreadyExists)
        );
        let rv1 = meta::str_at(&created, &["metadata", "resourceVersion"]).map(str::to_string);
        let updated = s
            .update::<()>(&k, rv1.as_deref(), |o| {
                o["spec"] = json!({"x": 1});
                Ok(())
            })
            .expect("no closure error")
            .expect("updated");
        assert_ne!(
            updated["metadata"]["resourceVersion"],
            created["metadata"]["resourceVersion"]
        );
        assert_eq!(
            s.update::<()>(&k, rv1.as_deref(), |_| Ok(())),
            Ok(Err(StoreError::Conflict))
        );
        s.delete(&k).expect("deleted");
        let kinds: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted]
        );
    }

    #[test]
    fn watch_replays_history_after_a_version() {
        let s = Store::new();
        let a = s
            .create(Key::new("pods", "default", "a"), pod("a"))
            .expect("a");
        s.create(Key::new("pods", "default", "b"), pod("b"))
            .expect("b");
        let rv: u64 = meta::str_at(&a, &["metadata", "resourceVersion"])
            .and_then(|r| r.parse().ok())
            .expect("rv");
        let (backlog, _) = s.watch(Some(rv)).expect("watch");
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].key.name, "b");
    }
}
