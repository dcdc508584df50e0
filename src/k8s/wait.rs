//! Waiting for a pod to run: by watch where allowed, else a tight get loop; failing at once, with the pod's story, when it cannot start.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use std::collections::BTreeSet;

use futures::TryStreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};

use super::pod_watch::{Backoff, Deadline, Decision, Followed, Opened, follow_pod, open_watch};
use super::progress::{Progress, WaitNotice};
use super::retry::with_retry;
use super::{K8sError, Kube};

/// How often the job log hears about a workflow pod still waiting for the scheduler.
pub(crate) const WAITING_NOTICE: Duration = Duration::from_secs(30);

/// The longest pause between two reads of a pod when it cannot be watched.
pub(crate) const POLL_CAP: Duration = Duration::from_millis(500);

/// Container waiting reasons that will not resolve by themselves. `CrashLoopBackOff` only ever
/// shows for a container the kubelet restarts (a service); an ephemeral container is never
/// restarted, so for step containers it simply never appears.
pub(crate) const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
];

/// Whether a kubelet's pull error says the registry has no such image or tag (yet), as when a
/// parallel job has not pushed it: containerd's `rpc error: code = NotFound desc = failed to pull
/// and unpack image "r/x:1": failed to resolve reference "r/x:1": r/x:1: not found` (seen in
/// kubernetes-sigs/provider-aws-test-infra#281), and the registry API's `MANIFEST_UNKNOWN` /
/// `NAME_UNKNOWN` codes as CRI-O and Docker print them (`manifest unknown`, `name unknown`,
/// `manifest for r/x:1 not found`). Errors that only share words with those — a network or TLS
/// failure during the same resolve (`failed to resolve reference ...: failed to do request: Head
/// ...: dial tcp ...: connect: connection timed out`, kubernetes/kubeadm#2936), or a refusal
/// (401/403, `denied`, `unauthorized`) — are never a missing image. Pure.
pub(crate) fn image_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    const OTHER_FAILURES: &[&str] = &[
        "unauthorized",
        "denied",
        "forbidden",
        "401",
        "403",
        "x509",
        "tls",
        "certificate",
        "failed to do request",
        "dial tcp",
        "i/o timeout",
        "connection refused",
        "no such host",
        "toomanyrequests",
        "429",
    ];
    if OTHER_FAILURES.iter().any(|f| m.contains(f)) {
        return false;
    }
    m.contains("code = notfound")
        || m.trim_end().ends_with(": not found")
        || m.contains("manifest unknown")
        || m.contains("name unknown")
        || (m.contains("manifest for ") && m.contains(" not found"))
}

/// A bounded wait for images the registry does not have yet (`ARC_HOOK_IMAGE_PULL_WAIT_SECONDS`),
/// shared by every wait for a container to start. It remembers each container's last
/// `ErrImagePull` cause, because a kubelet before 1.32 reports only `Back-off pulling image "x"`
/// during the back-off (1.32 appends the cause: kubernetes/kubernetes#127918).
#[derive(Debug)]
pub(crate) struct PullWait {
    limit: Duration,
    progress: Progress,
    since: Option<Instant>,
    next_notice: Option<Instant>,
    not_found: std::collections::BTreeMap<String, bool>,
}

impl PullWait {
    /// A wait of at most `limit` per episode; zero: never wait (pull errors fail at once).
    pub(crate) fn new(limit: Duration, progress: Progress) -> Self {
        Self {
            limit,
            progress,
            since: None,
            next_notice: None,
            not_found: Default::default(),
        }
    }

    /// When the only containers that cannot start are waiting for images the registry does not
    /// have, those images; `None` when the wait is off, or anything else is wrong.
    pub(crate) fn missing_images<'a>(
        &mut self,
        statuses: impl IntoIterator<Item = &'a ContainerStatus>,
    ) -> Option<Vec<String>> {
        if self.limit.is_zero() {
            return None;
        }
        let mut images = Vec::new();
        for s in statuses {
            let Some(state) = s.state.as_ref() else {
                continue;
            };
            if state.terminated.is_some() {
                return None;
            }
            let Some(w) = state.waiting.as_ref() else {
                continue;
            };
            let msg = w.message.as_deref().unwrap_or_default();
            let missing = match w.reason.as_deref().unwrap_or_default() {
                "ErrImagePull" => {
                    let nf = image_not_found(msg);
                    self.not_found.insert(s.name.clone(), nf);
                    nf
                }
                "ImagePullBackOff" => match msg.split_once("\": ") {
                    Some((_, cause)) => image_not_found(cause),
                    None => self.not_found.get(&s.name).copied().unwrap_or(false),
                },
                r if FATAL_WAITING.contains(&r) => false,
                _ => continue,
            };
            if !missing {
                return None;
            }
            if !images.contains(&s.image) {
                images.push(s.image.clone());
            }
        }
        (!images.is_empty()).then_some(images)
    }

    /// Keeps waiting for `images` (a job-log line at once and every [`WAITING_NOTICE`]), or,
    /// once the limit has passed, the failure naming them and `cause`.
    pub(crate) fn keep_waiting(&mut self, images: &[String], cause: &str) -> Result<(), String> {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let list = images.join(", ");
        if since.elapsed() >= self.limit {
            return Err(format!(
                "image {list} is still not in the registry after {}s (ARC_HOOK_IMAGE_PULL_WAIT_SECONDS): {cause}",
                since.elapsed().as_secs()
            ));
        }
        if self.next_notice.is_none_or(|t| now >= t) {
            (self.progress)(&WaitNotice::ImagesNotPushed {
                images: &list,
                so_far: since.elapsed(),
                limit: self.limit,
            });
            self.next_notice = Some(now + WAITING_NOTICE);
        }
        Ok(())
    }

    /// How long until the wait must look again: the next notice or the limit, at most `cap`.
    pub(crate) fn next_look(&self, cap: Duration) -> Duration {
        let Some(since) = self.since else {
            return cap;
        };
        let limit_at = since + self.limit;
        self.next_notice
            .map_or(limit_at, |n| n.min(limit_at))
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(100), cap)
    }

    /// Whether an episode is running.
    pub(crate) fn waiting(&self) -> bool {
        self.since.is_some()
    }

    /// Ends an episode (the image came, or something else happened): how long it lasted, which a
    /// caller's own deadline gives back; one job-log line if it was reported.
    pub(crate) fn resolved(&mut self) -> Duration {
        let Some(since) = self.since.take() else {
            return Duration::ZERO;
        };
        self.next_notice = None;
        let waited = since.elapsed();
        (self.progress)(&WaitNotice::ImagesPushed { waited });
        waited
    }
}

/// Where a pod stands on its way to running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PodProgress {
    /// Running, every container started.
    Running,
    /// Still on its way (scheduling, pulling...).
    Pending(String),
    /// Cannot be scheduled (yet); fails after a grace period unless the cluster scales up.
    Unschedulable(String),
    /// Will never run; the reason, for the user.
    Failed(String),
}

fn container_problem(s: &ContainerStatus) -> Option<String> {
    let state = s.state.as_ref()?;
    if let Some(w) = &state.waiting {
        let reason = w.reason.as_deref().unwrap_or_default();
        if FATAL_WAITING.contains(&reason) {
            let msg = w.message.as_deref().unwrap_or_default();
            return Some(format!(
                "container {}: {reason}{}{msg}",
                s.name,
                if msg.is_empty() { "" } else { ": " }
            ));
        }
    }
    if let Some(t) = &state.terminated {
        let reason = t.reason.as_deref().unwrap_or("Terminated");
        let msg = t
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        return Some(format!(
            "container {} exited with code {} ({reason}){msg}",
            s.name, t.exit_code
        ));
    }
    None
}

/// Classifies a pod's status (pure; `classify` is what every wait decides with).
pub(crate) fn classify(pod: &Pod) -> PodProgress {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodProgress::Failed("the pod is being deleted".into());
    }
    let Some(status) = pod.status.as_ref() else {
        return PodProgress::Pending("no status yet".into());
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" {
        let reason = status.reason.as_deref().unwrap_or(phase);
        let msg = status
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        let containers: Vec<String> = status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(container_problem)
            .collect();
        let extra = if containers.is_empty() {
            String::new()
        } else {
            format!("; {}", containers.join("; "))
        };
        return PodProgress::Failed(format!(
            "pod {}{msg}{extra}",
            if reason == phase {
                format!("phase {phase}")
            } else {
                reason.to_string()
            }
        ));
    }
    let statuses: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    for s in &statuses {
        if let Some(p) = container_problem(s) {
            // A finished init container is fine.
            let init_done = status.init_container_statuses.iter().flatten().any(|i| {
                i.name == s.name
                    && i.state
                        .as_ref()
                        .and_then(|st| st.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0)
            });
            if !init_done {
                return PodProgress::Failed(p);
            }
        }
    }
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        if c.reason.as_deref() == Some("Unschedulable") {
            return PodProgress::Unschedulable(
                c.message
                    .clone()
                    .unwrap_or_else(|| "no node fits the pod".into()),
            );
        }
    }
    let all_running = status.container_statuses.as_ref().is_some_and(|cs| {
        !cs.is_empty()
            && cs
                .iter()
                .all(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
    });
    if phase == "Running" && all_running {
        return PodProgress::Running;
    }
    let waiting: Vec<String> = statuses
        .iter()
        .filter_map(|s| {
            let w = s.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "{}: {}",
                s.name,
                w.reason.as_deref().unwrap_or("waiting")
            ))
        })
        .collect();
    PodProgress::Pending(if waiting.is_empty() {
        phase.to_string()
    } else {
        waiting.join(", ")
    })
}

/// What the scheduler's `Unschedulable` message says about the pod's chances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchedulingVerdict {
    /// No node could ever take it (a request above every node's allocatable, an affinity or
    /// selector no node matches): the scheduler found preemption not helpful on every node.
    NeverFits,
    /// Some node could take it once other pods end (e.g. `Insufficient cpu`, no victims found).
    NodeBusy,
    /// Anything else (taints, volumes, an older scheduler's wording): given a grace period.
    Unknown,
}

/// Reads kube-scheduler's FailedScheduling message, e.g. `0/3 nodes are available: 1 Insufficient
/// cpu, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available:
/// 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.`
/// Preemption is "not helpful" exactly where a filter failed unresolvably (NodeResourcesFit marks
/// a request above the node's allocatable so), which is what tells a full node from a too-small one.
pub(crate) fn scheduling_verdict(message: &str) -> SchedulingVerdict {
    let nodes = |part: &str| -> Option<u64> {
        let rest = part.trim_start().strip_prefix("0/")?;
        rest.split_once(' ')?.0.parse().ok()
    };
    let Some((filters, preemption)) = message.split_once("preemption:") else {
        return SchedulingVerdict::Unknown;
    };
    let Some(total) = nodes(filters) else {
        return SchedulingVerdict::Unknown;
    };
    // The scheduler finds preemption no help against a taint too, but a taint is the node's to
    // shed (a new node's start-up taints): such a node may take the pod soon.
    let tainted = filters.contains("untolerated taint");
    let counted = |reason: &str| -> u64 {
        preemption
            .split_once(':')
            .map(|(_, r)| r)
            .unwrap_or_default()
            .split(',')
            .filter(|r| r.contains(reason))
            .filter_map(|r| r.trim().split_once(' ')?.0.parse::<u64>().ok())
            .sum()
    };
    if total > 0 && counted("Preemption is not helpful") >= total && !tainted {
        SchedulingVerdict::NeverFits
    } else if counted("No preemption victims found") > 0 {
        SchedulingVerdict::NodeBusy
    } else {
        SchedulingVerdict::Unknown
    }
}

/// How a wait may observe the pod.
#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    pub timeout: Duration,
    pub can_watch: bool,
    pub can_list_events: bool,
    /// How long an Unschedulable pod is given before failing (unless the cluster is scaling up,
    /// or the node is only busy: then the whole timeout).
    pub unschedulable_grace: Duration,
    /// How often a pod waiting for the scheduler is reported in the job log (`None`: never).
    pub waiting_notice: Option<Duration>,
    /// Also return once the pod's containers have run and finished (step pods that exit fast).
    pub accept_finished: bool,
    /// How long a container whose image the registry does not have (yet) is waited for, apart
    /// from `timeout` (zero: such a pull error fails at once).
    pub image_pull_wait: Duration,
    /// Where the wait's notices go (the job log, for the hooks).
    pub progress: Progress,
}

/// The statuses of a pod still on its way (init containers, then containers); none for a pod
/// being deleted or ended, whose pull errors no longer matter.
fn live_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref().filter(|s| {
        pod.metadata.deletion_timestamp.is_none()
            && !matches!(s.phase.as_deref(), Some("Failed" | "Succeeded"))
    });
    let init = status.and_then(|s| s.init_container_statuses.as_deref());
    let main = status.and_then(|s| s.container_statuses.as_deref());
    init.unwrap_or_default()
        .iter()
        .chain(main.unwrap_or_default())
}

/// Whether every container has started: running, or already terminated with an exit code.
pub(crate) fn has_run(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    if status.reason.as_deref() == Some("Evicted") {
        return false;
    }
    status.container_statuses.as_ref().is_some_and(|cs| {
        !cs.is_empty()
            && cs.iter().all(|s| {
                s.state
                    .as_ref()
                    .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
            })
    })
}

/// The pod's events, oldest first (empty when they cannot be listed).
async fn list_pod_events(kube: &Kube, pod: &str) -> Vec<Event> {
    let params = ListParams::default().fields(&format!(
        "involvedObject.name={pod},involvedObject.kind=Pod"
    ));
    let api = kube.events();
    let Ok(list) = with_retry(&format!("listing events of pod {pod}"), || {
        api.list(&params)
    })
    .await
    else {
        return Vec::new();
    };
    let mut events: Vec<Event> = list.items;
    events.sort_by_key(|e| {
        e.last_timestamp
            .clone()
            .map(|t| t.0)
            .or(e.event_time.clone().map(|t| t.0))
    });
    events
}

/// The pod's recent events, oldest first, one line each (empty without permission).
pub(crate) async fn pod_events(kube: &Kube, pod: &str) -> Vec<String> {
    let events = list_pod_events(kube, pod).await;
    events
        .iter()
        .rev()
        .take(8)
        .rev()
        .map(|e| {
            format!(
                "{} {}: {}",
                e.type_.as_deref().unwrap_or("Normal"),
                e.reason.as_deref().unwrap_or_default(),
                e.message.as_deref().unwrap_or_default().trim()
            )
        })
        .collect()
}

/// The message of the latest `reason` event about one of the pod's containers (the kubelet
/// names it by field path, `spec.containers{name}`), e.g. its last `Unhealthy` probe failure.
pub(crate) async fn last_container_event(
    kube: &Kube,
    pod: &str,
    container: &str,
    reason: &str,
) -> Option<String> {
    let field_path = format!("spec.containers{{{container}}}");
    list_pod_events(kube, pod)
        .await
        .into_iter()
        .rev()
        .find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.involved_object.field_path.as_deref() == Some(field_path.as_str())
        })
        .and_then(|e| e.message)
        .map(|m| m.trim().to_string())
}

async fn scaling_up(kube: &Kube, pod: &str) -> bool {
    pod_events(kube, pod)
        .await
        .iter()
        .any(|e| e.contains("TriggeredScaleUp"))
}

/// What is wrong with a pod that should be running (evicted, deleted, a container killed),
/// for explaining a failed exec; `None` when it looks healthy or cannot be read.
pub(crate) async fn pod_problem(kube: &Kube, name: &str) -> Option<String> {
    let api = kube.pods();
    match with_retry(&format!("reading pod {name}"), || api.get_opt(name)).await {
        Ok(None) => Some(format!("pod {name} no longer exists")),
        Ok(Some(pod)) => match classify(&pod) {
            PodProgress::Failed(why) => Some(format!("pod {name}: {why}")),
            _ => None,
        },
        Err(_) => None,
    }
}

/// Why a pod never ran: the pod's story, or the failure of the API that kept the wait from
/// following it (kept as the cause, so `{:#}` shows its chain).
#[derive(Debug, thiserror::Error)]
pub enum PodFailure {
    /// The summary and the events that explain it.
    #[error("{summary}{}", event_lines(events))]
    Pod {
        summary: String,
        events: Vec<String>,
    },
    #[error(transparent)]
    Api(#[from] K8sError),
}

/// The events under a failure's summary, one indented line each.
fn event_lines(events: &[String]) -> String {
    events.iter().map(|e| format!("\n  event: {e}")).collect()
}

/// When the wait saw the pod's milestones.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Milestones {
    /// When the pod was first seen scheduled (`PodScheduled=True`).
    pub scheduled: Option<Instant>,
}

/// The scheduler of a pod that has no node and no `PodScheduled` condition at all: one its
/// scheduler has not looked at yet (or never will: it is not running, or the template's
/// `schedulerName` names none). `None` once it has a node or a scheduling verdict.
fn unattended(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref();
    if spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
    {
        return None;
    }
    let judged = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "PodScheduled"));
    (!judged).then(|| {
        spec.and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler")
    })
}

fn is_scheduled(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "True")
        })
}

/// Waits until pod `name` runs. Fails at once when it never will.
pub async fn wait_running(kube: &Kube, name: &str, opts: WaitOptions) -> Result<Pod, PodFailure> {
    wait_running_observed(kube, name, opts, &mut Milestones::default()).await
}

/// [`wait_running`], noting when the pod was scheduled in `seen`.
pub(crate) async fn wait_running_observed(
    kube: &Kube,
    name: &str,
    opts: WaitOptions,
    seen: &mut Milestones,
) -> Result<Pod, PodFailure> {
    wait_until(kube, name, opts, seen, &|_| false).await
}

/// Waits until init container `container` of pod `name` runs, failing as [`wait_running`] does
/// (also when the init container ended, or the pod got past it: it ran without the hook).
pub(crate) async fn wait_init_running(
    kube: &Kube,
    name: &str,
    container: &str,
    opts: WaitOptions,
) -> Result<Pod, PodFailure> {
    let started = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container))
            .and_then(|c| c.state.as_ref())
            .is_some_and(|st| st.running.is_some())
    };
    let opts = WaitOptions {
        accept_finished: false,
        ..opts
    };
    let pod = wait_until(kube, name, opts, &mut Milestones::default(), &started).await?;
    if started(&pod) {
        Ok(pod)
    } else {
        Err(PodFailure::Pod {
            summary: format!("pod {name} got past its init container {container} on its own"),
            events: Vec::new(),
        })
    }
}

/// The wait behind both: returns once `done` holds or the pod runs.
async fn wait_until(
    kube: &Kube,
    name: &str,
    opts: WaitOptions,
    seen: &mut Milestones,
    done: &dyn Fn(&Pod) -> bool,
) -> Result<Pod, PodFailure> {
    let mut pulls = PullWait::new(opts.image_pull_wait, opts.progress);
    let mut unschedulable_since: Option<Instant> = None;
    // Since when the pod has had neither a node nor a word from its scheduler.
    let mut unattended_since: Option<Instant> = None;
    let mut next_notice: Option<Instant> = None;
    let fail = |summary: String| async move {
        let events = if opts.can_list_events {
            pod_events(kube, name).await
        } else {
            Vec::new()
        };
        PodFailure::Pod { summary, events }
    };
    let decide = async |current: &Pod| -> Decision<Result<Pod, PodFailure>> {
        if seen.scheduled.is_none() && is_scheduled(current) {
            seen.scheduled = Some(Instant::now());
        }
        if done(current) || opts.accept_finished && has_run(current) {
            return Decision::Done(Ok(current.clone()));
        }
        let mut progress = classify(current);
        if let PodProgress::Failed(why) = &progress
            && let Some(images) = pulls.missing_images(live_statuses(current))
        {
            if let Err(gave_up) = pulls.keep_waiting(&images, why) {
                let summary = format!("pod {name} cannot run: {gave_up}");
                return Decision::Done(Err(fail(summary).await));
            }
            // Time spent waiting for a push is not the prepare timeout's.
            return Decision::Hold(pulls.next_look(Duration::from_secs(10)));
        }
        if pulls.waiting() {
            pulls.resolved();
            progress = classify(current);
        }
        // Whether a grace period is running out, so the pod must be looked at every second.
        let grace_running;
        match progress {
            PodProgress::Running => return Decision::Done(Ok(current.clone())),
            PodProgress::Failed(why) => {
                let summary = format!("pod {name} cannot run: {why}");
                return Decision::Done(Err(fail(summary).await));
            }
            PodProgress::Unschedulable(why) => {
                let since = *unschedulable_since.get_or_insert_with(Instant::now);
                let verdict = scheduling_verdict(&why);
                grace_running = verdict == SchedulingVerdict::Unknown;
                let give_up = match verdict {
                    SchedulingVerdict::NeverFits => true,
                    SchedulingVerdict::NodeBusy => false,
                    SchedulingVerdict::Unknown => since.elapsed() >= opts.unschedulable_grace,
                };
                if give_up && !(opts.can_list_events && scaling_up(kube, name).await) {
                    let summary = if verdict == SchedulingVerdict::NeverFits {
                        format!(
                            "pod {name} can never be scheduled, even once other pods end: {why} (lower the template's resource requests, or fix its node selector, affinity or volumes)"
                        )
                    } else {
                        let hint = if why.contains("untolerated taint") {
                            " (give the template a toleration for the taint or, for one a new node sheds once ready, name its key in ARC_HOOK_WAIT_FOR_NODE_TAINTS)"
                        } else {
                            ""
                        };
                        format!(
                            "pod {name} cannot be scheduled after {}s (ARC_HOOK_UNSCHEDULABLE_GRACE_SECONDS): {why}{hint}",
                            since.elapsed().as_secs()
                        )
                    };
                    return Decision::Done(Err(fail(summary).await));
                }
                if let Some(every) = opts.waiting_notice {
                    let due = next_notice.is_none_or(|t| Instant::now() >= t);
                    if due {
                        (opts.progress)(&WaitNotice::Unschedulable {
                            pod: name,
                            why: &why,
                            so_far: since.elapsed(),
                            limit: opts.timeout,
                        });
                        next_notice = Some(Instant::now() + every);
                    }
                }
            }
            PodProgress::Pending(_) => {
                unschedulable_since = None;
                grace_running = false;
                match unattended(current) {
                    Some(scheduler) => {
                        let since = *unattended_since.get_or_insert_with(Instant::now);
                        let due = next_notice.is_none_or(|t| Instant::now() >= t);
                        if let Some(every) = opts.waiting_notice
                            && since.elapsed() >= every
                            && due
                        {
                            (opts.progress)(&WaitNotice::NotPickedUp {
                                pod: name,
                                scheduler,
                                so_far: since.elapsed(),
                                limit: opts.timeout,
                            });
                            next_notice = Some(Instant::now() + every);
                        }
                    }
                    None => unattended_since = None,
                }
            }
        }
        // Re-check unschedulable pods at least once per second while a grace period runs;
        // a pod waiting for room is woken by its own changes, and looked at by the next notice.
        Decision::LookAgain(if grace_running {
            Duration::from_secs(1)
        } else if let Some(t) = next_notice.filter(|_| unschedulable_since.is_some()) {
            t.saturating_duration_since(Instant::now())
                .clamp(Duration::from_secs(1), Duration::from_secs(10))
        } else {
            Duration::from_secs(10)
        })
    };
    let deadline = Deadline::after(opts.timeout);
    match follow_pod(kube, name, opts.can_watch, deadline, decide).await? {
        Followed::Decided(answer) => answer,
        Followed::Gone => Err(fail(format!("pod {name} was deleted before it ran")).await),
        Followed::TimedOut(last) => {
            let why = match (classify(&last), unattended(&last)) {
                (PodProgress::Pending(_), Some(scheduler)) => format!(
                    "Pending, never picked up by its scheduler {scheduler} (is it running? the template's schedulerName must name one that is)"
                ),
                (PodProgress::Pending(w) | PodProgress::Unschedulable(w), _) => w,
                _ => String::new(),
            };
            Err(fail(format!(
                "pod {name} did not start within {}s (ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS); last state: {why}",
                opts.timeout.as_secs()
            ))
            .await)
        }
    }
}

/// Waits until no object `lp` selects remains (`what` names them: "pods of runner x"): one
/// list, then, where `can_watch`, a watch from its version that counts the deletions; else a list
/// at the poll's pace (up to 1 s apart). A broken watch falls back to listing again; a refused
/// one to listing for the rest of the wait.
pub(crate) async fn wait_gone<K>(
    api: &kube::Api<K>,
    what: &str,
    lp: &ListParams,
    timeout: Duration,
    mut can_watch: bool,
) -> Result<(), K8sError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let deadline = Deadline::after(timeout);
    let mut backoff = Backoff::new(Duration::from_secs(1));
    loop {
        let list = with_retry(&format!("listing {what}"), || api.list(lp)).await?;
        let mut left: BTreeSet<String> = list
            .items
            .iter()
            .filter_map(|o| o.meta().name.clone())
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if can_watch {
            let version = list.metadata.resource_version.clone().unwrap_or_default();
            let secs = deadline.remaining().as_secs().clamp(1, 290) as u32;
            let mut wp = WatchParams::default().timeout(secs);
            wp.label_selector = lp.label_selector.clone();
            wp.field_selector = lp.field_selector.clone();
            match open_watch(api, &wp, &version, what).await {
                Opened::Stream(mut stream) => {
                    if all_deleted(&mut stream, &mut left, deadline).await {
                        return Ok(());
                    }
                }
                Opened::Refused => can_watch = false,
                Opened::Slow => {}
            }
        }
        if !deadline.pause(&mut backoff, timeout).await {
            return Err(K8sError::Timeout {
                what: format!("{what} to be deleted"),
                after: timeout,
            });
        }
    }
}

/// Counts the deletions `stream` reports against `left` (adding objects it sees created) until
/// none is left (true), or the stream ends, breaks or reaches the deadline (false: list again).
async fn all_deleted<K: kube::Resource>(
    stream: &mut super::pod_watch::EventStream<K>,
    left: &mut BTreeSet<String>,
    deadline: Deadline,
) -> bool {
    loop {
        match tokio::time::timeout_at(deadline.at(), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Deleted(o)))) => {
                if let Some(n) = o.meta().name.as_ref() {
                    left.remove(n);
                }
                if left.is_empty() {
                    return true;
                }
            }
            Ok(Ok(Some(WatchEvent::Added(o)))) => left.extend(o.meta().name.clone()),
            Ok(Ok(Some(WatchEvent::Modified(_) | WatchEvent::Bookmark(_)))) => {}
            // Ended, broken or an error event (410 Gone...), or out of time.
            Ok(Ok(Some(WatchEvent::Error(_)) | None) | Err(_)) | Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::progress::silent;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status}))
            .expect("valid pod")
    }

    #[test]
    fn running_needs_every_container_running() {
        let p = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "job", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}},
            {"name": "redis", "ready": false, "restartCount": 0, "image": "x", "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}
        ]}));
        assert_eq!(
            classify(&p),
            PodProgress::Pending("redis: ContainerCreating".into())
        );
        let p = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "job", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}
        ]}));
        assert_eq!(classify(&p), PodProgress::Running);
    }

    #[test]
    fn image_pull_failures_are_fatal() {
        let p = pod(json!({"phase": "Pending", "containerStatuses": [
            {"name": "job", "ready": false, "restartCount": 0, "image": "nope:1", "imageID": "",
             "state": {"waiting": {"reason": "ErrImagePull", "message": "failed to pull image \"nope:1\": not found"}}}
        ]}));
        assert_eq!(
            classify(&p),
            PodProgress::Failed(
                "container job: ErrImagePull: failed to pull image \"nope:1\": not found".into()
            )
        );
    }

    #[test]
    fn only_a_missing_image_or_tag_is_worth_waiting_for() {
        let img = "registry.example.internal/ci/built:abc";
        for missing in [
            format!("rpc error: code = NotFound desc = failed to pull and unpack image \"{img}\": failed to resolve reference \"{img}\": {img}: not found"),
            format!("Back-off pulling image \"{img}\": ErrImagePull: rpc error: code = NotFound desc = failed to pull and unpack image \"{img}\": failed to resolve reference \"{img}\": {img}: not found"),
            format!("rpc error: code = Unknown desc = reading manifest abc in {img}: manifest unknown"),
            format!("Error response from daemon: manifest for {img} not found: manifest unknown: manifest unknown"),
            "rpc error: code = Unknown desc = reading manifest x in r/ci/never: name unknown: repository name not known to registry".to_string(),
        ] {
            assert!(image_not_found(&missing), "{missing}");
        }
        for other in [
            format!("rpc error: code = Unknown desc = failed to pull and unpack image \"{img}\": failed to resolve reference \"{img}\": failed to do request: Head \"https://registry.example.internal/v2/ci/built/manifests/abc\": dial tcp 10.0.0.5:443: connect: connection timed out"),
            format!("rpc error: code = Unknown desc = failed to pull and unpack image \"{img}\": failed to resolve reference \"{img}\": pulling from host registry.example.internal failed with status code [manifests abc]: 401 Unauthorized"),
            format!("rpc error: code = Unknown desc = failed to pull and unpack image \"{img}\": failed to resolve reference \"{img}\": failed to do request: Head \"https://registry.example.internal/v2/\": tls: failed to verify certificate: x509: certificate signed by unknown authority"),
            "pull access denied for x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied".to_string(),
            format!("Back-off pulling image \"{img}\""),
        ] {
            assert!(!image_not_found(&other), "{other}");
        }
    }

    fn waiting(name: &str, image: &str, reason: &str, message: &str) -> ContainerStatus {
        serde_json::from_value(
            json!({"name": name, "ready": false, "restartCount": 0, "image": image, "imageID": "",
            "state": {"waiting": {"reason": reason, "message": message}}}),
        )
        .expect("status")
    }

    #[test]
    fn a_pull_wait_follows_missing_images_through_the_back_off() {
        let nf = "rpc error: code = NotFound desc = failed to pull and unpack image \"b:1\": failed to resolve reference \"b:1\": b:1: not found";
        let mut off = PullWait::new(Duration::ZERO, silent);
        assert_eq!(
            off.missing_images(&[waiting("job", "b:1", "ErrImagePull", nf)]),
            None
        );
        let mut w = PullWait::new(Duration::from_secs(60), silent);
        let creating = waiting("redis", "redis:7", "ContainerCreating", "");
        assert_eq!(
            w.missing_images(&[waiting("job", "b:1", "ErrImagePull", nf), creating.clone()]),
            Some(vec!["b:1".to_string()])
        );
        // A kubelet before 1.32: the back-off message alone, the cause remembered.
        let old_back_off = waiting(
            "job",
            "b:1",
            "ImagePullBackOff",
            "Back-off pulling image \"b:1\"",
        );
        assert_eq!(
            w.missing_images(std::slice::from_ref(&old_back_off)),
            Some(vec!["b:1".to_string()])
        );
        assert_eq!(
            PullWait::new(Duration::from_secs(60), silent).missing_images(&[old_back_off]),
            None
        );
        // Any other failure beside it ends the wait.
        let denied = waiting("redis", "redis:7", "ErrImagePull", "401 Unauthorized");
        assert_eq!(
            w.missing_images(&[waiting("job", "b:1", "ErrImagePull", nf), denied]),
            None
        );
        let config = waiting(
            "job",
            "b:1",
            "CreateContainerConfigError",
            "secret \"x\" not found",
        );
        assert_eq!(w.missing_images(&[config]), None);
        // Nothing failing: nothing to wait for.
        assert_eq!(w.missing_images(&[creating]), None);
    }

    #[test]
    fn a_pull_wait_gives_up_at_its_limit_naming_the_image() {
        let mut w = PullWait::new(Duration::from_millis(1), silent);
        assert!(w.keep_waiting(&["b:1".into()], "not found").is_ok());
        std::thread::sleep(Duration::from_millis(5));
        let e = w
            .keep_waiting(&["b:1".into()], "b:1: not found")
            .expect_err("limit");
        assert!(
            e.starts_with("image b:1 is still not in the registry after 0s (ARC_HOOK_IMAGE_PULL_WAIT_SECONDS): b:1: not found"),
            "{e}"
        );
        assert!(w.waiting());
        w.resolved();
        assert!(!w.waiting());
    }

    #[test]
    fn eviction_and_exit_are_fatal() {
        let p = pod(
            json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
        );
        assert_eq!(
            classify(&p),
            PodProgress::Failed("pod Evicted: The node was low on resource: memory.".into())
        );
        let p = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "job", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"terminated": {"exitCode": 127, "reason": "Error", "message": "tail: not found"}}}
        ]}));
        assert_eq!(
            classify(&p),
            PodProgress::Failed(
                "container job exited with code 127 (Error): tail: not found".into()
            )
        );
    }

    #[test]
    fn unschedulable_is_reported() {
        let p = pod(json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}
        ]}));
        assert_eq!(
            classify(&p),
            PodProgress::Unschedulable(
                "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()
            )
        );
    }

    #[test]
    fn a_pod_without_node_or_scheduling_condition_is_unattended_by_its_scheduler() {
        let mut p = pod(json!({"phase": "Pending"}));
        assert_eq!(unattended(&p), Some("default-scheduler"));
        p.spec.get_or_insert_default().scheduler_name = Some("volcano".into());
        assert_eq!(unattended(&p), Some("volcano"));
        let judged = pod(json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
        ]}));
        assert_eq!(unattended(&judged), None, "the scheduler has spoken");
        let mut bound = pod(json!({"phase": "Pending"}));
        bound.spec.get_or_insert_default().node_name = Some("node-1".into());
        assert_eq!(unattended(&bound), None, "a node is named");
    }

    #[test]
    fn scheduler_messages_tell_a_busy_node_from_one_that_never_fits() {
        use SchedulingVerdict::*;
        let busy = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
        assert_eq!(scheduling_verdict(busy), NodeBusy);
        let too_big = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
        assert_eq!(scheduling_verdict(too_big), NeverFits);
        let pinned_busy = "0/5 nodes are available: 1 Insufficient memory, 4 node(s) didn't match Pod's node affinity/selector. preemption: 0/5 nodes are available: 1 No preemption victims found for incoming pod, 4 Preemption is not helpful for scheduling.";
        assert_eq!(scheduling_verdict(pinned_busy), NodeBusy);
        let no_node = "0/5 nodes are available: 5 node(s) didn't match Pod's node affinity/selector. preemption: 0/5 nodes are available: 5 Preemption is not helpful for scheduling.";
        assert_eq!(scheduling_verdict(no_node), NeverFits);
        assert_eq!(
            scheduling_verdict(
                "0/3 nodes are available: 3 node(s) had untolerated taint {gpu: true}."
            ),
            Unknown
        );
        assert_eq!(scheduling_verdict("no node fits the pod"), Unknown);
        // A taint is the node's to shed: never "never fits", though preemption cannot help.
        let tainted = "0/1 nodes are available: 1 node(s) had untolerated taint {cache-not-ready: true}. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
        assert_eq!(scheduling_verdict(tainted), Unknown);
    }

    #[test]
    fn deletion_is_fatal() {
        let mut p = pod(json!({"phase": "Pending"}));
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        assert_eq!(
            classify(&p),
            PodProgress::Failed("the pod is being deleted".into())
        );
    }

    #[test]
    fn failure_display_lists_events() {
        let f = PodFailure::Pod {
            summary: "pod p cannot run".into(),
            events: vec!["Warning Failed: x".into()],
        };
        assert_eq!(
            f.to_string(),
            "pod p cannot run\n  event: Warning Failed: x"
        );
    }
}
