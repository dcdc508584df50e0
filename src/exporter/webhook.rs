//! The `/webhook` receiver: `X-Hub-Signature-256` verification and `workflow_job`/`workflow_run` events.
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;

use super::collect::{RepoFilter, Scope};
use super::github::{Job, WorkflowRun};
use super::ledger::{Ledger, RunJobs};
use super::metrics::SelfStats;

/// Delivery ids remembered to drop GitHub's redeliveries.
const REMEMBERED_DELIVERIES: usize = 10_000;

/// Shared state of the webhook handler.
pub struct Webhook {
    key: ring::hmac::Key,
    scope: Scope,
    filter: RepoFilter,
    ledger: Arc<Mutex<Ledger>>,
    stats: Arc<Mutex<SelfStats>>,
    deliveries: Mutex<(HashSet<String>, VecDeque<String>)>,
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` against the HMAC-SHA256 of `body`, in constant time.
pub(crate) fn verify_signature(key: &ring::hmac::Key, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    ring::hmac::verify(key, body, &tag).is_ok()
}

/// The signature header value GitHub would send for `body` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[derive(Debug, Deserialize)]
struct EventRepository {
    full_name: String,
    #[serde(default)]
    default_branch: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct WorkflowJobEvent {
    workflow_job: Job,
    repository: EventRepository,
}

#[derive(Debug, Deserialize)]
struct WorkflowRunEvent {
    action: String,
    workflow_run: WorkflowRun,
    /// The workflow the run belongs to: names the run when its own `name` is empty.
    #[serde(default)]
    workflow: Option<EventWorkflow>,
    repository: EventRepository,
}

#[derive(Debug, Default, Deserialize)]
struct EventWorkflow {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

/// Fills an empty run `name` or a missing `path` from the delivery's `workflow` object.
fn name_run(mut run: WorkflowRun, workflow: Option<EventWorkflow>) -> WorkflowRun {
    let workflow = workflow.unwrap_or_default();
    let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    if empty(&run.name) && !empty(&workflow.name) {
        run.name = workflow.name;
    }
    if empty(&run.path) && !empty(&workflow.path) {
        run.path = workflow.path;
    }
    run
}

impl Webhook {
    /// A receiver for deliveries signed with `secret`, recording events of repositories in `scope`.
    pub fn new(
        secret: &[u8],
        scope: Scope,
        ledger: Arc<Mutex<Ledger>>,
        stats: Arc<Mutex<SelfStats>>,
    ) -> Self {
        Webhook {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            scope,
            filter: RepoFilter::default(),
            ledger,
            stats,
            deliveries: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// The same receiver ignoring repositories `filter` does not watch (by the delivery's
    /// repository name and topics, as polling does).
    pub(crate) fn with_repo_filter(mut self, filter: RepoFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The `repo` label of a delivery's repository, if it is watched.
    fn watched(&self, repository: &EventRepository) -> Option<String> {
        self.scope
            .label_for(&repository.full_name)
            .filter(|r| self.filter.allows(r, &repository.topics))
    }

    fn count(&self, result: &str) {
        if let Ok(mut s) = self.stats.lock() {
            *s.webhook_deliveries.entry(result.to_string()).or_default() += 1;
        }
    }

    /// Returns false if this delivery id was handled before.
    fn first_delivery(&self, id: &str) -> bool {
        let Ok(mut d) = self.deliveries.lock() else {
            return true;
        };
        let (set, order) = &mut *d;
        if !set.insert(id.to_string()) {
            return false;
        }
        order.push_back(id.to_string());
        if order.len() > REMEMBERED_DELIVERIES {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }

    /// Handles one delivery; the status is what GitHub gets back.
    pub fn handle(&self, headers: &HeaderMap, body: &[u8]) -> (StatusCode, &'static str) {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if !verify_signature(&self.key, body, header("x-hub-signature-256")) {
            self.count("bad_signature");
            tracing::warn!("webhook delivery with a missing or wrong X-Hub-Signature-256 refused");
            return (StatusCode::UNAUTHORIZED, "bad signature\n");
        }
        if let Some(id) = header("x-github-delivery") {
            if !self.first_delivery(id) {
                self.count("duplicate");
                return (StatusCode::OK, "duplicate delivery\n");
            }
        }
        let now = Utc::now();
        let result = match header("x-github-event") {
            Some("ping") => Ok("ping"),
            Some("workflow_job") => serde_json::from_slice::<WorkflowJobEvent>(body).map(|ev| {
                let Some(repo) = self.watched(&ev.repository) else {
                    return "ignored";
                };
                let Ok(mut l) = self.ledger.lock() else {
                    return "unchanged";
                };
                l.job_update(&repo, &ev.workflow_job);
                if l.record_job(&ev.workflow_job, now) || ev.workflow_job.waits_for_runner() {
                    "accepted"
                } else {
                    "unchanged"
                }
            }),
            Some("workflow_run") => serde_json::from_slice::<WorkflowRunEvent>(body).map(|ev| {
                let Some(repo) = self.watched(&ev.repository) else {
                    return "ignored";
                };
                let repo = repo.as_str();
                let Ok(mut l) = self.ledger.lock() else {
                    return "unchanged";
                };
                let run = name_run(ev.workflow_run, ev.workflow);
                match ev.action.as_str() {
                    // The delivery's status says "completed" on completion; an older payload
                    // shape says otherwise, and the action is what GitHub documents.
                    "completed" => {
                        let run = WorkflowRun {
                            status: Some("completed".into()),
                            ..run
                        };
                        if l.record_run(
                            repo,
                            ev.repository.default_branch.as_deref(),
                            &run,
                            now,
                            RunJobs::Pending,
                        ) {
                            "accepted"
                        } else {
                            "unchanged"
                        }
                    }
                    _ => {
                        let status = run.status.as_deref().unwrap_or("queued");
                        l.mark_run_open(repo, run.id, status);
                        "accepted"
                    }
                }
            }),
            _ => Ok("ignored"),
        };
        match result {
            Ok(r) => {
                self.count(r);
                (StatusCode::OK, "ok\n")
            }
            Err(e) => {
                self.count("invalid");
                tracing::warn!(error = %e, "webhook payload not understood");
                (StatusCode::BAD_REQUEST, "payload not understood\n")
            }
        }
    }
}

/// The axum handler for `POST /webhook`.
pub(crate) async fn receive(
    State(hook): State<Arc<Webhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    hook.handle(&headers, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_rejects_tampering() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
        let sig = sign(b"s3cret", b"{}");
        assert!(verify_signature(&key, b"{}", Some(&sig)));
        assert!(!verify_signature(&key, b"{ }", Some(&sig)));
        assert!(!verify_signature(&key, b"{}", None));
        assert!(!verify_signature(&key, b"{}", Some("sha1=00")));
        assert!(!verify_signature(&key, b"{}", Some("sha256=zz")));
    }
}
