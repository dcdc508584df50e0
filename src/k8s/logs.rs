//! The one log follower: a container's log copied to the job log as it is written, resumed after a broken stream from the last line printed, so every line arrives once and in order.
//!
//! The stream is requested with `timestamps=true`: each line starts with the kubelet's
//! RFC 3339 timestamp. When a stream breaks (an error rather than its clean end, which comes
//! only when the container has ended), the follower asks again with `sinceTime` at the second of
//! the last printed line (the API's `sinceTime` has one-second precision) and skips every line it
//! already printed: those before the last timestamp, and as many at that timestamp as it printed.

use std::time::Duration;

use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::LogParams;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Kube;
use super::retry::{backoff, with_retry};

/// How long the follower keeps trying to reopen a broken stream before giving up.
pub(crate) const RESUME_WINDOW: Duration = Duration::from_secs(600);

/// A log that could not be followed to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// The log could not be opened at all (its action names the pod and container).
    #[error(transparent)]
    Open(super::K8sError),
    #[error(
        "the log of {container} in pod {pod} broke and could not be reopened for {}s (last error: {last})",
        RESUME_WINDOW.as_secs()
    )]
    Lost {
        pod: String,
        container: String,
        last: String,
    },
    #[error("writing the job log")]
    Write(#[source] std::io::Error),
}

/// A kubelet timestamp, comparable: the seconds part as written (fixed width) and nanoseconds
/// (RFC 3339 with nanoseconds trims trailing zeros, so the text alone does not sort).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp {
    seconds: String,
    nanos: u32,
}

impl Stamp {
    /// `2026-12-01T02:24:31.1234Z` -> (`2026-12-01T02:24:31`, 123400000).
    fn parse(s: &str) -> Option<Stamp> {
        let s = s.strip_suffix('Z')?;
        let (seconds, frac) = match s.split_once('.') {
            Some((sec, f)) => (sec, f),
            None => (s, ""),
        };
        if seconds.len() != 19 || !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
            return None;
        }
        let nanos = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<9}").parse().ok()?
        };
        Some(Stamp {
            seconds: seconds.to_string(),
            nanos,
        })
    }

    /// The `sinceTime` (whole seconds) covering this stamp.
    fn since(&self) -> Option<Timestamp> {
        format!("{}Z", self.seconds).parse().ok()
    }
}

/// Where the follower is in the log.
#[derive(Debug, Default)]
struct Cursor {
    last: Option<Stamp>,
    /// Lines printed with exactly `last`'s timestamp.
    printed_at_last: usize,
    /// Lines seen with `last`'s timestamp in the current pass.
    seen_at_last: usize,
}

impl Cursor {
    fn new_pass(&mut self) {
        self.seen_at_last = 0;
    }

    /// The content of a timestamped line when it was not printed yet.
    fn admit<'a>(&mut self, line: &'a str) -> Option<&'a str> {
        let (ts, content) = match line.split_once(' ') {
            Some((ts, rest)) => (Stamp::parse(ts), rest),
            None => (Stamp::parse(line), ""),
        };
        let Some(ts) = ts else {
            // Not a timestamp: print as is (a runtime that does not stamp lines).
            return Some(line);
        };
        match self.last.as_ref().map(|l| ts.cmp(l)) {
            Some(std::cmp::Ordering::Less) => None,
            Some(std::cmp::Ordering::Equal) => {
                self.seen_at_last += 1;
                if self.seen_at_last <= self.printed_at_last {
                    None
                } else {
                    self.printed_at_last += 1;
                    Some(content)
                }
            }
            _ => {
                self.last = Some(ts);
                self.printed_at_last = 1;
                self.seen_at_last = 1;
                Some(content)
            }
        }
    }
}

/// Copies `container`'s log in `pod` to `out` until the container ends, resuming after broken
/// streams (for up to [`RESUME_WINDOW`] of failed attempts in a row).
pub(crate) async fn follow<W: AsyncWrite + Unpin>(
    kube: &Kube,
    pod: &str,
    container: &str,
    mut out: W,
) -> Result<(), LogError> {
    let api = kube.pods();
    let mut cursor = Cursor::default();
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut attempt = 0u32;
    loop {
        let lp = LogParams {
            follow: true,
            timestamps: true,
            container: Some(container.into()),
            since_time: cursor.last.as_ref().and_then(Stamp::since),
            ..Default::default()
        };
        let opened = with_retry(
            &format!("reading the log of {container} in pod {pod}"),
            || api.log_stream(pod, &lp),
        )
        .await;
        let stream = match opened {
            Ok(s) => s,
            Err(e) if cursor.last.is_none() && failing_since.is_none() => {
                return Err(LogError::Open(e));
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= RESUME_WINDOW {
                    return Err(LogError::Lost {
                        pod: pod.into(),
                        container: container.into(),
                        last: e.chain(),
                    });
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        cursor.new_pass();
        let mut lines = stream.lines();
        let ended = loop {
            match lines.try_next().await {
                Ok(Some(line)) => {
                    // Reading again: the stream works.
                    failing_since = None;
                    attempt = 0;
                    if let Some(content) = cursor.admit(&line) {
                        let w = async {
                            out.write_all(content.as_bytes()).await?;
                            out.write_all(b"\n").await?;
                            out.flush().await
                        };
                        w.await.map_err(LogError::Write)?;
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        match ended {
            // A followed log ends cleanly only when the container has ended.
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!(%pod, %container, error = %e, "log stream broke; resuming");
                failing_since.get_or_insert_with(tokio::time::Instant::now);
                tokio::time::sleep(backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_by_time_not_text() {
        let a = Stamp::parse("2026-12-01T02:24:31.12345Z").expect("a");
        let b = Stamp::parse("2026-12-01T02:24:31.123456789Z").expect("b");
        assert!(a < b, "31.12345 is before 31.123456789");
        assert_eq!(Stamp::parse("2026-12-01T02:24:31Z").expect("c").nanos, 0);
        assert!(Stamp::parse("yesterday").is_none());
        assert!(a.since().is_some());
    }

    #[test]
    fn a_resumed_pass_prints_only_what_is_new() {
        let mut c = Cursor::default();
        c.new_pass();
        let first = [
            "2026-12-01T02:24:30.5Z one",
            "2026-12-01T02:24:31.1Z two",
            "2026-12-01T02:24:31.1Z two again (same nanosecond)",
        ];
        let printed: Vec<_> = first.iter().filter_map(|l| c.admit(l)).collect();
        assert_eq!(printed, ["one", "two", "two again (same nanosecond)"]);
        // The stream broke; the next pass starts at second :31 and repeats what was printed.
        c.new_pass();
        let second = [
            "2026-12-01T02:24:31.1Z two",
            "2026-12-01T02:24:31.1Z two again (same nanosecond)",
            "2026-12-01T02:24:31.1Z a third at that nanosecond",
            "2026-12-01T02:24:32Z three",
        ];
        let printed: Vec<_> = second.iter().filter_map(|l| c.admit(l)).collect();
        assert_eq!(printed, ["a third at that nanosecond", "three"]);
        assert_eq!(c.admit("not stamped"), Some("not stamped"));
        assert_eq!(c.admit("2026-12-01T02:24:33Z"), Some(""), "an empty line");
    }
}
