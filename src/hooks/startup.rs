//! Where a workflow pod's start-up time went (scheduling, each image pull, ready): one job-log line and an annotation on the pod.

use std::time::{Duration, Instant};

use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::k8s::Kube;
use crate::k8s::rbac::{Extra, Granted};
use crate::k8s::retry::with_retry;
use crate::k8s::wait::Milestones;

/// The workflow pod's annotation holding the start-up times (JSON, seconds).
pub(crate) const STARTUP_ANNOTATION: &str = "arc-hook.dev/startup";

/// One image's pull as the kubelet reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pull {
    pub image: String,
    /// Seconds the pull took; `None` when the image was already on the node.
    pub seconds: Option<f64>,
}

/// A pod's start-up, measured from its creation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Startup {
    pub scheduled_after: Option<Duration>,
    pub pulls: Vec<Pull>,
    pub ready_after: Duration,
}

/// Reads a kubelet `Pulled` event: `Successfully pulled image "x" in 1.2s (1.2s including
/// waiting)...` or `Container image "x" already present on machine`.
pub(crate) fn parse_pulled(message: &str) -> Option<Pull> {
    let quoted = |s: &str| -> Option<(String, String)> {
        let (_, rest) = s.split_once('"')?;
        let (image, tail) = rest.split_once('"')?;
        Some((image.to_string(), tail.to_string()))
    };
    if message.starts_with("Container image ") && message.contains("already present") {
        let (image, _) = quoted(message)?;
        return Some(Pull {
            image,
            seconds: None,
        });
    }
    let rest = message.strip_prefix("Successfully pulled image ")?;
    let (image, tail) = quoted(rest)?;
    let took = tail
        .trim_start()
        .strip_prefix("in ")?
        .split_whitespace()
        .next()?;
    Some(Pull {
        image,
        seconds: Some(go_duration_seconds(took)?),
    })
}

/// Go's `time.Duration` text (`1.5s`, `850ms`, `1m2.5s`, `3µs`) in seconds.
fn go_duration_seconds(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// The job-log line: `arc-hook: workflow pod ready after 4.1s (scheduled after 0.2s; pulled
/// node:20 in 3.5s; redis:7 already on the node)`.
pub(crate) fn line(s: &Startup) -> String {
    let mut parts = Vec::new();
    if let Some(d) = s.scheduled_after {
        parts.push(format!("scheduled after {:.1}s", d.as_secs_f64()));
    }
    for p in &s.pulls {
        parts.push(match p.seconds {
            Some(t) => format!("pulled {} in {t:.1}s", p.image),
            None => format!("{} already on the node", p.image),
        });
    }
    let detail = if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    };
    format!(
        "arc-hook: workflow pod ready after {:.1}s{detail}",
        s.ready_after.as_secs_f64()
    )
}

/// The annotation's JSON value.
pub(crate) fn annotation(s: &Startup) -> String {
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let pulls: serde_json::Map<String, serde_json::Value> = s
        .pulls
        .iter()
        .map(|p| (p.image.clone(), json!(p.seconds.map(round))))
        .collect();
    json!({
        "scheduledSeconds": s.scheduled_after.map(|d| round(d.as_secs_f64())),
        "pullSeconds": pulls,
        "readySeconds": round(s.ready_after.as_secs_f64()),
    })
    .to_string()
}

/// The image pulls of pod `pod` with UID `uid`, from its `Pulled` events (empty without
/// permission to list events): events of an earlier pod of the same name are not its own.
async fn pulls(kube: &Kube, pod: &str, uid: &str) -> Vec<Pull> {
    let params = ListParams::default().fields(&format!(
        "involvedObject.name={pod},involvedObject.kind=Pod,reason=Pulled"
    ));
    let api = kube.events();
    match with_retry(&format!("listing events of pod {pod}"), || {
        api.list(&params)
    })
    .await
    {
        Ok(list) => once_per_image(
            list.items
                .iter()
                .filter(|e| e.reason.as_deref() == Some("Pulled"))
                .filter(|e| uid.is_empty() || e.involved_object.uid.as_deref() == Some(uid))
                .filter_map(|e| parse_pulled(e.message.as_deref()?)),
        ),
        Err(e) => {
            tracing::debug!(error = %e.chain(), "cannot read the pod's pull events");
            Vec::new()
        }
    }
}

/// Each image once, at its first pull (a container restarted during start-up is pulled again).
fn once_per_image(pulls: impl Iterator<Item = Pull>) -> Vec<Pull> {
    let mut out: Vec<Pull> = Vec::new();
    for p in pulls {
        if !out.iter().any(|o| o.image == p.image) {
            out.push(p);
        }
    }
    out
}

/// Prints the start-up line of pod `pod` (UID `uid`, the one that runs) and records it on the
/// pod; best effort, never fails the job.
pub(crate) async fn report(
    kube: &Kube,
    pod: &str,
    uid: &str,
    granted: &Granted,
    created_at: Instant,
    seen: Milestones,
) {
    let ready_after = created_at.elapsed();
    let pulls = if granted.has(Extra::ListEvents) {
        pulls(kube, pod, uid).await
    } else {
        Vec::new()
    };
    let startup = Startup {
        scheduled_after: seen
            .scheduled
            .map(|t| t.saturating_duration_since(created_at)),
        pulls,
        ready_after,
    };
    crate::joblog::line(line(&startup));
    if !granted.has(Extra::AnnotatePods) {
        return;
    }
    let patch = json!({"metadata": {"annotations": {STARTUP_ANNOTATION: annotation(&startup)}}});
    let api = kube.pods();
    let params = PatchParams::default();
    let patch = Patch::Merge(&patch);
    if let Err(e) = with_retry(&format!("annotating pod {pod}"), || {
        api.patch(pod, &params, &patch)
    })
    .await
    {
        tracing::warn!(error = %e.chain(), "cannot record the start-up times on the pod");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulled_events_are_read() {
        assert_eq!(
            parse_pulled(
                "Successfully pulled image \"node:20\" in 3.512s (3.6s including waiting). Image size: 3623807 bytes."
            ),
            Some(Pull {
                image: "node:20".into(),
                seconds: Some(3.512)
            })
        );
        assert_eq!(
            parse_pulled("Successfully pulled image \"x\" in 1m2.5s (1m2.5s including waiting)"),
            Some(Pull {
                image: "x".into(),
                seconds: Some(62.5)
            })
        );
        assert_eq!(
            parse_pulled("Successfully pulled image \"x\" in 850ms (850ms including waiting)"),
            Some(Pull {
                image: "x".into(),
                seconds: Some(0.85)
            })
        );
        assert_eq!(
            parse_pulled("Container image \"redis:7\" already present on machine"),
            Some(Pull {
                image: "redis:7".into(),
                seconds: None
            })
        );
        assert_eq!(parse_pulled("Pulling image \"x\""), None);
    }

    #[test]
    fn each_image_is_reported_once() {
        let pull = |image: &str, seconds| Pull {
            image: image.into(),
            seconds,
        };
        let pulls = once_per_image(
            [
                pull("a", Some(1.0)),
                pull("b", None),
                pull("a", None),
                pull("b", None),
            ]
            .into_iter(),
        );
        assert_eq!(pulls, [pull("a", Some(1.0)), pull("b", None)]);
    }

    #[test]
    fn the_line_says_where_time_went() {
        let s = Startup {
            scheduled_after: Some(Duration::from_millis(200)),
            pulls: vec![
                Pull {
                    image: "node:20".into(),
                    seconds: Some(3.5),
                },
                Pull {
                    image: "redis:7".into(),
                    seconds: None,
                },
            ],
            ready_after: Duration::from_millis(4100),
        };
        assert_eq!(
            line(&s),
            "arc-hook: workflow pod ready after 4.1s (scheduled after 0.2s; pulled node:20 in 3.5s; redis:7 already on the node)"
        );
        assert_eq!(
            annotation(&s),
            r#"{"pullSeconds":{"node:20":3.5,"redis:7":null},"readySeconds":4.1,"scheduledSeconds":0.2}"#
        );
    }
}
