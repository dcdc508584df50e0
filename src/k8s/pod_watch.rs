//! Following one object's versions (a pod, the runner's node) until a caller's decision is made or a deadline passes (the one follow loop), the one way to open a watch, and the pace and deadline every other wait uses: a single watch kept open across changes where the Role grants `watch`, else reads 50 ms apart, doubling to a cap.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{WatchEvent, WatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::retry::with_retry;
use super::wait::POLL_CAP;
use super::{K8sError, Kube};

/// The first pause of a poll; each pause doubles up to the poll's cap.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// How long a watch request may take to open before the wait reads instead.
const WATCH_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The server-side timeout asked of a watch (the API server ends it then; it is re-opened from
/// the last version seen).
const WATCH_SECONDS: u32 = 290;

/// The pace of a wait that looks again and again: pauses of 50 ms, doubling up to a cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    pause: Duration,
    cap: Duration,
}

impl Backoff {
    /// A pace pausing at most `cap` between looks.
    pub(crate) fn new(cap: Duration) -> Self {
        Self {
            pause: FIRST_PAUSE.min(cap),
            cap,
        }
    }

    /// Sleeps until the next look, at most `within`.
    pub(crate) async fn pause(&mut self, within: Duration) {
        tokio::time::sleep(self.pause.min(within)).await;
        self.pause = (self.pause * 2).min(self.cap);
    }
}

/// When a wait ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline `timeout` from now.
    pub(crate) fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
        }
    }

    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    pub(crate) fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Moves the deadline `by` later (time a wait gives back).
    pub(crate) fn extend(&mut self, by: Duration) {
        self.at += by;
    }

    /// Sleeps for `backoff`'s next pause (at most `within`, never past the deadline); false,
    /// without sleeping, once the deadline has passed.
    pub(crate) async fn pause(&self, backoff: &mut Backoff, within: Duration) -> bool {
        if self.expired() {
            return false;
        }
        backoff.pause(within.min(self.remaining())).await;
        true
    }
}

/// What a caller of [`ObjectWatch::follow`] makes of one version of the object.
#[derive(Debug)]
pub(crate) enum Decision<T> {
    /// The wait is over.
    Done(T),
    /// Look again at the next change, or after this long at the latest (the caller's own
    /// timers: notices, grace periods), never past the deadline.
    LookAgain(Duration),
    /// As `LookAgain`, for a wait the deadline does not cover (an image not pushed yet, which
    /// has its own limit): the deadline is not checked, and moves later by the time spent.
    Hold(Duration),
}

/// How following an object ended without an error of the API.
#[derive(Debug)]
pub(crate) enum Followed<T, K> {
    /// The caller's decision.
    Decided(T),
    /// The deadline passed first; the last version seen.
    TimedOut(Box<K>),
    /// The object does not exist (any more).
    Gone,
}

/// What the next look at an object found.
#[derive(Debug)]
pub(crate) enum Look<K = Pod> {
    /// A newer version of the object.
    Changed(Box<K>),
    /// Nothing new within the time given (the caller re-decides, e.g. on its timers).
    Unchanged,
    /// The object was deleted.
    Gone,
}

/// One object, followed version by version.
pub(crate) struct ObjectWatch<'a, K> {
    api: Api<K>,
    /// What the object is, for messages: `pod`, `node`.
    kind: &'static str,
    name: &'a str,
    can_watch: bool,
    stream: Option<EventStream<K>>,
    version: String,
    backoff: Backoff,
}

/// A watch's events, as kube gives them.
pub(crate) type EventStream<K> = BoxStream<'static, Result<WatchEvent<K>, kube::Error>>;

/// One pod, followed version by version.
pub(crate) type PodWatch<'a> = ObjectWatch<'a, Pod>;

impl<'a> ObjectWatch<'a, Pod> {
    /// Reads pod `name` once (`None`: it does not exist); see [`ObjectWatch::start_on`].
    pub(crate) async fn start(
        kube: &'a Kube,
        name: &'a str,
        can_watch: bool,
        poll_cap: Duration,
    ) -> Result<(Self, Option<Pod>), K8sError> {
        Self::start_on(kube.pods(), "pod", name, can_watch, poll_cap).await
    }
}

impl<'a> ObjectWatch<'a, Node> {
    /// Reads node `name` once (`None`: it does not exist); see [`ObjectWatch::start_on`].
    pub(crate) async fn node(
        kube: &'a Kube,
        name: &'a str,
        can_watch: bool,
        poll_cap: Duration,
    ) -> Result<(Self, Option<Node>), K8sError> {
        Self::start_on(
            Api::all(kube.client.clone()),
            "node",
            name,
            can_watch,
            poll_cap,
        )
        .await
    }
}

impl<'a, K> ObjectWatch<'a, K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    /// Reads the object once (`None`: it does not exist). Later looks watch from that version
    /// where `can_watch`, else read again at the poll's pace (capped at `poll_cap`).
    pub(crate) async fn start_on(
        api: Api<K>,
        kind: &'static str,
        name: &'a str,
        can_watch: bool,
        poll_cap: Duration,
    ) -> Result<(Self, Option<K>), K8sError> {
        let mut watch = Self {
            api,
            kind,
            name,
            can_watch,
            stream: None,
            version: String::new(),
            backoff: Backoff::new(poll_cap),
        };
        let object = watch.read().await?;
        Ok((watch, object))
    }

    async fn read(&mut self) -> Result<Option<K>, K8sError> {
        let api = &self.api;
        let pod = with_retry(&format!("reading {} {}", self.kind, self.name), || {
            api.get_opt(self.name)
        })
        .await?;
        if let Some(v) = pod.as_ref().and_then(|p| p.meta().resource_version.clone()) {
            self.version = v;
        }
        Ok(pod)
    }

    /// Waits up to `within` for the object's next version.
    pub(crate) async fn next(&mut self, within: Duration) -> Result<Look<K>, K8sError> {
        if self.can_watch {
            let asked = Instant::now();
            if let Some(look) = self.watched(within).await {
                return Ok(look);
            }
            // A watch that ends as soon as it opens (or cannot open) must not turn the wait into
            // a busy loop: read at the poll's pace until one lasts.
            if asked.elapsed() < Duration::from_secs(1) {
                self.backoff.pause(within).await;
            }
        } else {
            self.backoff.pause(within).await;
        }
        let before = self.version.clone();
        Ok(match self.read().await? {
            None => Look::Gone,
            Some(p) if p.meta().resource_version.as_deref() == Some(before.as_str()) => {
                Look::Unchanged
            }
            Some(p) => Look::Changed(Box::new(p)),
        })
    }

    /// The next watch event within `within`; `None` when the watch ended or could not be opened
    /// (the caller reads the pod instead; the watch is re-opened from that version next time).
    async fn watched(&mut self, within: Duration) -> Option<Look<K>> {
        if self.stream.is_none() {
            self.stream = self.open().await;
            self.stream.as_ref()?;
        }
        let stream = self.stream.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            let item = match tokio::time::timeout_at(deadline, stream.try_next()).await {
                Err(_) => return Some(Look::Unchanged),
                Ok(Ok(Some(item))) => item,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, kind = self.kind, name = self.name, "watch broke");
                    break;
                }
            };
            match item {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    if let Some(v) = p.meta().resource_version.clone() {
                        self.version = v;
                    }
                    return Some(Look::Changed(Box::new(p)));
                }
                WatchEvent::Deleted(_) => return Some(Look::Gone),
                WatchEvent::Bookmark(b) => self.version = b.metadata.resource_version,
                WatchEvent::Error(e) => {
                    tracing::debug!(
                        code = e.code,
                        kind = self.kind,
                        name = self.name,
                        "watch ended: {}",
                        e.message
                    );
                    break;
                }
            }
        }
        self.stream = None;
        None
    }

    async fn open(&mut self) -> Option<EventStream<K>> {
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_SECONDS);
        let what = format!("{} {}", self.kind, self.name);
        match open_watch(&self.api, &params, &self.version, &what).await {
            Opened::Stream(s) => Some(s),
            Opened::Refused => {
                // Poll for the rest of this wait.
                self.can_watch = false;
                None
            }
            Opened::Slow => None,
        }
    }

    /// Follows the object from `first` (what the start read) until `decide` has an answer or the
    /// deadline passes: kube-runtime's `await_condition`, bounded, and reading where the Role
    /// grants no `watch`. `decide` sees the first version and every change after it, and again
    /// (the same version) whenever the time it asked for has passed.
    pub(crate) async fn follow<T>(
        mut self,
        first: Option<K>,
        mut deadline: Deadline,
        mut decide: impl AsyncFnMut(&K) -> Decision<T>,
    ) -> Result<Followed<T, K>, K8sError> {
        let Some(mut current) = first else {
            return Ok(Followed::Gone);
        };
        loop {
            let look = match decide(&current).await {
                Decision::Done(answer) => return Ok(Followed::Decided(answer)),
                Decision::LookAgain(within) => {
                    if deadline.expired() {
                        return Ok(Followed::TimedOut(Box::new(current)));
                    }
                    self.next(within.min(deadline.remaining())).await
                }
                Decision::Hold(within) => {
                    let asked = Instant::now();
                    let look = self.next(within).await;
                    deadline.extend(asked.elapsed());
                    look
                }
            };
            match look {
                Ok(Look::Changed(p)) => current = *p,
                Ok(Look::Unchanged) => {}
                Ok(Look::Gone) => return Ok(Followed::Gone),
                Err(e) if e.is_not_found() => return Ok(Followed::Gone),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Follows pod `name` (see [`ObjectWatch::follow`]), read at most [`POLL_CAP`] apart where it
/// cannot be watched.
pub(crate) async fn follow_pod<T>(
    kube: &Kube,
    name: &str,
    can_watch: bool,
    deadline: Deadline,
    decide: impl AsyncFnMut(&Pod) -> Decision<T>,
) -> Result<Followed<T, Pod>, K8sError> {
    let (watch, first) = PodWatch::start(kube, name, can_watch, POLL_CAP).await?;
    watch.follow(first, deadline, decide).await
}

/// What asking for a watch came to.
pub(crate) enum Opened<K> {
    Stream(EventStream<K>),
    /// The API server refused it (403 despite the review, 405...): read instead, for good.
    Refused,
    /// It did not open within [`WATCH_OPEN_TIMEOUT`]: read instead, this time.
    Slow,
}

/// Opens a watch of what `params` selects, from `version` (`what` names it in debug logs); the
/// one way every wait asks for events, of any kind of object.
pub(crate) async fn open_watch<K>(
    api: &Api<K>,
    params: &WatchParams,
    version: &str,
    what: &str,
) -> Opened<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    match tokio::time::timeout(WATCH_OPEN_TIMEOUT, api.watch(params, version)).await {
        Ok(Ok(s)) => Opened::Stream(s.boxed()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, what, "cannot watch; reading instead");
            Opened::Refused
        }
        Err(_) => {
            tracing::debug!(what, "the watch did not open in time; reading instead");
            Opened::Slow
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_to_the_cap_and_stop_at_the_deadline() {
        let deadline = Deadline::after(Duration::from_millis(1000));
        let mut backoff = Backoff::new(Duration::from_millis(300));
        let mut pauses = Vec::new();
        loop {
            let before = Instant::now();
            if !deadline.pause(&mut backoff, Duration::from_secs(60)).await {
                break;
            }
            pauses.push(before.elapsed().as_millis());
        }
        assert_eq!(pauses, vec![50, 100, 200, 300, 300, 50]);
        assert!(deadline.expired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_never_longer_than_asked() {
        let mut backoff = Backoff::new(Duration::from_secs(5));
        for _ in 0..5 {
            backoff.pause(Duration::from_secs(60)).await;
        }
        let before = Instant::now();
        backoff.pause(Duration::from_millis(20)).await;
        assert_eq!(before.elapsed().as_millis(), 20);
    }
}
