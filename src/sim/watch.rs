//! Watch streams: newline-delimited watch events with selectors, resourceVersion, bookmarks and timeouts.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::SimState;
use super::api::{Filter, Query, Target, present, store_id};
use super::status::{ApiError, streamed_response};
use super::store::{Change, ChangeKind, StoreError};

/// Bookmarks go out this often when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// Server-side watch length when the client sets no timeoutSeconds.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The event a watcher with `filter` sees for `change`, if any: objects entering the selection are
/// ADDED, leaving it DELETED.
fn event_for(change: &Change, t: &Target, filter: &Filter) -> Option<(&'static str, Value)> {
    if change.key.resource != store_id(t.res)
        || t.ns.as_deref().is_some_and(|ns| ns != change.key.namespace)
    {
        return None;
    }
    let obj = present(t.res, &change.object);
    let now = filter.matches(&obj);
    match change.kind {
        ChangeKind::Added | ChangeKind::Deleted => now.then(|| (change.kind.as_str(), obj)),
        ChangeKind::Modified => {
            let before = change
                .previous
                .as_ref()
                .is_some_and(|p| filter.matches(&present(t.res, p)));
            match (before, now) {
                (true, true) => Some(("MODIFIED", obj)),
                (false, true) => Some(("ADDED", obj)),
                (true, false) => Some(("DELETED", obj)),
                (false, false) => None,
            }
        }
    }
}

/// The object of a watch event: as stored, or a one-row Table for `kubectl get -w`.
fn shaped(res: &'static super::resources::Resource, obj: &Value, as_table: bool) -> Value {
    if as_table {
        super::table::table(res, std::slice::from_ref(obj), None)
    } else {
        obj.clone()
    }
}

pub(crate) fn serve(sim: Arc<SimState>, t: Target, q: &Query, as_table: bool) -> Response {
    let filter = match Filter::from_query(q) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let requested_rv = match q
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
    {
        None => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return ApiError::bad_request(format!("invalid resource version: {rv}"))
                    .into_response();
            }
        },
    };
    let send_initial = q.flag("sendInitialEvents") || requested_rv.is_none();
    let bookmarks = q.flag("allowWatchBookmarks");
    let initial_end_marker = q.flag("sendInitialEvents");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let close_after = sim.faults.watch_close_after_events();

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    // Snapshot and subscription at the same resourceVersion, so nothing falls between them.
    let (initial, from) = if send_initial {
        let (items, rv) = sim.store.list(store_id(t.res), t.ns.as_deref());
        (items, Some(rv))
    } else {
        (Vec::new(), requested_rv)
    };
    let subscription = sim.store.watch(from);
    tokio::spawn(async move {
        let (backlog, mut live) = match subscription {
            Ok(s) => s,
            Err(StoreError::Gone { requested, oldest }) => {
                let status =
                    ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
                        .to_status();
                let _ = tx.send(Ok(event_line("ERROR", &status))).await;
                return;
            }
            Err(_) => return,
        };
        let mut sent = 0usize;
        let mut last_rv = from.unwrap_or(0);
        for obj in initial {
            let obj = present(t.res, &obj);
            if filter.matches(&obj) {
                if tx
                    .send(Ok(event_line("ADDED", &shaped(t.res, &obj, as_table))))
                    .await
                    .is_err()
                {
                    return;
                }
                sent += 1;
                if close_after.is_some_and(|n| sent >= n) {
                    return;
                }
            }
        }
        if initial_end_marker {
            let bm = json!({"kind": t.res.kind, "apiVersion": t.res.api_version(),
                "metadata": {"resourceVersion": last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(Ok(event_line("BOOKMARK", &bm))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        let mut backlog = backlog.into_iter();
        loop {
            let change = match backlog.next() {
                Some(c) => Some(c),
                None => tokio::select! {
                    c = live.recv() => match c {
                        Some(c) => Some(c),
                        None => return,
                    },
                    _ = ticker.tick() => None,
                    _ = &mut deadline => return,
                    _ = tx.closed() => return,
                },
            };
            let Some(change) = change else {
                if bookmarks {
                    let bm = json!({"kind": t.res.kind, "apiVersion": t.res.api_version(), "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(Ok(event_line("BOOKMARK", &bm))).await.is_err() {
                        return;
                    }
                }
                continue;
            };
            last_rv = last_rv.max(change.rv);
            if let Some((kind, obj)) = event_for(&change, &t, &filter) {
                if tx
                    .send(Ok(event_line(kind, &shaped(t.res, &obj, as_table))))
                    .await
                    .is_err()
                {
                    return;
                }
                sent += 1;
                if close_after.is_some_and(|n| sent >= n) {
                    tracing::debug!(sent, "injected fault: closing watch early");
                    return;
                }
            }
        }
    });
    streamed_response("application/json", rx)
}
