//! What a wait tells the user while it waits. The `k8s` layer says what is happening; the caller
//! decides where it goes (the hooks hand [`crate::joblog::notice`], tests and tools may hand
//! [`silent`]), so no wait writes to the job log itself.

use std::fmt;
use std::time::Duration;

/// Where a wait's notices go.
pub(crate) type Progress = fn(&WaitNotice<'_>);

/// Drops every notice.
pub fn silent(_: &WaitNotice<'_>) {}

/// Something a wait reports while it goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitNotice<'a> {
    /// The registry does not have `images` yet (a pull wait is running).
    ImagesNotPushed {
        images: &'a str,
        so_far: Duration,
        limit: Duration,
    },
    /// A reported image wait ended after `waited`.
    ImagesPushed { waited: Duration },
    /// Pod `pod` is waiting for the scheduler: `why`.
    Unschedulable {
        pod: &'a str,
        why: &'a str,
        so_far: Duration,
        limit: Duration,
    },
    /// Pod `pod` has had no node and no word from its scheduler `scheduler` for `so_far`.
    NotPickedUp {
        pod: &'a str,
        scheduler: &'a str,
        so_far: Duration,
        limit: Duration,
    },
    /// Node `node` still has start-up taints.
    StartupTaints {
        node: &'a str,
        taints: &'a str,
        so_far: Duration,
        limit: Duration,
    },
    /// Node `node` lost its start-up taints after `after`.
    TaintsGone { node: &'a str, after: Duration },
}

impl fmt::Display for WaitNotice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ImagesNotPushed {
                images,
                so_far,
                limit,
            } => write!(
                f,
                "image {images} is not in the registry yet; waiting for it to be pushed ({}s so far, up to {}s)",
                so_far.as_secs(),
                limit.as_secs()
            ),
            Self::ImagesPushed { waited } => {
                write!(f, "waited {}s for the image to be pushed", waited.as_secs())
            }
            Self::Unschedulable {
                pod,
                why,
                so_far,
                limit,
            } => write!(
                f,
                "pod {pod} is waiting for the scheduler ({}s so far, up to {}s): {why}",
                so_far.as_secs(),
                limit.as_secs()
            ),
            Self::NotPickedUp {
                pod,
                scheduler,
                so_far,
                limit,
            } => write!(
                f,
                "pod {pod} has not been picked up by its scheduler {scheduler} ({}s so far, up to {}s): no node and no scheduling condition; check that {scheduler} is running (the template's schedulerName names it)",
                so_far.as_secs(),
                limit.as_secs()
            ),
            Self::StartupTaints {
                node,
                taints,
                so_far,
                limit,
            } => write!(
                f,
                "node {node} has start-up taint(s) {taints}; waiting ({}s so far, up to {}s)",
                so_far.as_secs(),
                limit.as_secs()
            ),
            Self::TaintsGone { node, after } => write!(
                f,
                "node {node} lost its start-up taints after {}s",
                after.as_secs()
            ),
        }
    }
}
