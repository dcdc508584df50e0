//! Following one object's versions (a pod, the runner's node) until a caller's decision is made,
//! and the one poll pace every other wait uses: a single watch kept open across changes where the
//! Role grants `watch`, else reads 50 ms apart, doubling to a cap.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{WatchEvent, WatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::retry::with_retry;
use super::{K8sError, Kube};

/// The first pause of a poll; each pause doubles up to the poll's cap.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// How long a watch request may take to open before the wait reads instead.
const WATCH_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The server-side timeout asked of a watch (the API server ends it then; it is re-opened from
/// the last version seen).
const WATCH_SECONDS: u32 = 290;

/// The pace of a wait that looks again and again until a deadline: pauses of 50 ms, doubling up
/// to `cap`, never past the deadline.
#[derive(Debug, Clone)]
pub struct Poll {
    deadline: Instant,
    pause: Duration,
    cap: Duration,
}

impl Poll {
    /// A poll ending `timeout` from now, pausing at most `cap` between looks.
    pub fn new(timeout: Duration, cap: Duration) -> Self {
        Self {
            deadline: Instant::now() + timeout,
            pause: FIRST_PAUSE.min(cap),
            cap,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sleeps until the next look (at most `within`, never past the deadline); false, without
    /// sleeping, once the deadline has passed.
    pub async fn pause(&mut self, within: Duration) -> bool {
        if self.expired() {
            return false;
        }
        tokio::time::sleep(self.pause.min(within).min(self.remaining())).await;
        self.pause = (self.pause * 2).min(self.cap);
        true
    }
}

/// What the next look at an object found.
#[derive(Debug)]
pub enum Look<K = Pod> {
    /// A newer version of the object.
    Changed(Box<K>),
    /// Nothing new within the time given (the caller re-decides, e.g. on its timers).
    Unchanged,
    /// The object was deleted.
    Gone,
}

/// One object, followed version by version.
pub struct ObjectWatch<'a, K> {
    api: Api<K>,
    /// What the object is, for messages: `pod`, `node`.
    kind: &'static str,
    name: &'a str,
    can_watch: bool,
    stream: Option<BoxStream<'static, Result<WatchEvent<K>, kube::Error>>>,
    version: String,
    poll: Poll,
}

/// One pod, followed version by version.
pub type PodWatch<'a> = ObjectWatch<'a, Pod>;

impl<'a> ObjectWatch<'a, Pod> {
    /// Reads pod `name` once (`None`: it does not exist); see [`ObjectWatch::start_on`].
    pub async fn start(
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
    pub async fn node(
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
    pub async fn start_on(
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
            // The poll's own deadline is not used: every look is bounded by `within`.
            poll: Poll::new(Duration::from_secs(365 * 86_400), poll_cap),
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
    pub async fn next(&mut self, within: Duration) -> Result<Look<K>, K8sError> {
        if self.can_watch {
            let asked = Instant::now();
            if let Some(look) = self.watched(within).await {
                return Ok(look);
            }
            // A watch that ends as soon as it opens (or cannot open) must not turn the wait into
            // a busy loop: read at the poll's pace until one lasts.
            if asked.elapsed() < Duration::from_secs(1) {
                self.poll.pause(within).await;
            }
        } else {
            self.poll.pause(within).await;
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

    async fn open(&mut self) -> Option<BoxStream<'static, Result<WatchEvent<K>, kube::Error>>> {
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_SECONDS);
        let watch = self.api.watch(&params, &self.version);
        match tokio::time::timeout(WATCH_OPEN_TIMEOUT, watch).await {
            Ok(Ok(s)) => Some(s.boxed()),
            Ok(Err(e)) => {
                // Refused (403 despite the review, 405...): poll for the rest of this wait.
                tracing::debug!(error = %e, kind = self.kind, name = self.name, "cannot watch; reading instead");
                self.can_watch = false;
                None
            }
            Err(_) => {
                tracing::debug!(
                    kind = self.kind,
                    name = self.name,
                    "the watch did not open in time; reading instead"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn poll_pauses_double_to_the_cap_and_stop_at_the_deadline() {
        let mut poll = Poll::new(Duration::from_millis(1000), Duration::from_millis(300));
        let mut pauses = Vec::new();
        loop {
            let before = Instant::now();
            if !poll.pause(Duration::from_secs(60)).await {
                break;
            }
            pauses.push(before.elapsed().as_millis());
        }
        assert_eq!(pauses, vec![50, 100, 200, 300, 300, 50]);
        assert!(poll.expired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_never_longer_than_asked() {
        let mut poll = Poll::new(Duration::from_secs(60), Duration::from_secs(5));
        for _ in 0..5 {
            poll.pause(Duration::from_secs(60)).await;
        }
        let before = Instant::now();
        assert!(poll.pause(Duration::from_millis(20)).await);
        assert_eq!(before.elapsed().as_millis(), 20);
    }
}
