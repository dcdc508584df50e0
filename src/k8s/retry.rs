//! Retries of idempotent API calls on transient failures (connection errors, 429, 5xx), with backoff, jitter and a per-call timeout.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use super::K8sError;
use super::client::CALL_TIMEOUT;

/// How many times a call is tried before its error is returned.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// Whether a kube error is worth another try.
pub(crate) fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The delay before attempt `attempt` (1-based): exponential from 100 ms, capped at 5 s, with
/// full jitter so many runners retrying together do not stampede the API server.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(100 * 2u64.pow(attempt.min(6))).min(Duration::from_secs(5));
    let ms = rand::rng().random_range(cap.as_millis() as u64 / 2..=cap.as_millis() as u64);
    Duration::from_millis(ms)
}

/// Runs `call` until it succeeds, fails permanently, or `MAX_ATTEMPTS` are used up.
/// `action` names the call in errors ("creating pod x").
pub(crate) async fn with_retry<T, F, Fut>(action: &str, mut call: F) -> Result<T, K8sError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let started = std::time::Instant::now();
    let mut attempt = 1;
    loop {
        let outcome = tokio::time::timeout(CALL_TIMEOUT, call()).await;
        let err = match outcome {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if is_transient(&e) && attempt < MAX_ATTEMPTS => {
                super::ApiCause(e).to_string()
            }
            Ok(Err(e)) if is_transient(&e) && attempt > 1 => {
                return Err(K8sError::GaveUp {
                    action: action.to_string(),
                    attempts: attempt,
                    elapsed: started.elapsed(),
                    source: super::ApiCause(e),
                });
            }
            Ok(Err(e)) => return Err(K8sError::api(action, e)),
            Err(_) if attempt < MAX_ATTEMPTS => {
                format!("no answer within {}s", CALL_TIMEOUT.as_secs())
            }
            Err(_) => {
                return Err(K8sError::Timeout {
                    what: action.to_string(),
                    after: CALL_TIMEOUT,
                });
            }
        };
        let delay = backoff(attempt);
        tracing::debug!(action, attempt, error = %err, delay_ms = delay.as_millis() as u64, "transient API failure, retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(Status {
            code,
            message: if code == 404 {
                "pods \"x\" not found".into()
            } else {
                String::new()
            },
            ..Default::default()
        }))
    }

    #[test]
    fn transient_classes() {
        assert!(is_transient(&api(500)));
        assert!(is_transient(&api(503)));
        assert!(is_transient(&api(429)));
        assert!(!is_transient(&api(404)));
        assert!(!is_transient(&api(409)));
        assert!(!is_transient(&api(403)));
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        for a in 1..20 {
            let d = backoff(a);
            assert!(d <= Duration::from_secs(5));
            assert!(d >= Duration::from_millis(100));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_then_succeeds() {
        let mut n = 0;
        let v = with_retry("test call", || {
            n += 1;
            let fail = n < 3;
            async move { if fail { Err(api(503)) } else { Ok(n) } }
        })
        .await
        .expect("third attempt succeeds");
        assert_eq!(v, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let mut n = 0;
        let e = with_retry("getting pod x", || {
            n += 1;
            async { Err::<(), _>(api(404)) }
        })
        .await
        .expect_err("404 is final");
        assert_eq!(n, 1);
        assert!(e.is_not_found());
        // The kube error is kept as the cause, shown by the API's message, not flattened.
        assert_eq!(e.to_string(), "getting pod x");
        assert_eq!(e.chain(), "getting pod x: pods \"x\" not found");
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e)),
            "getting pod x: pods \"x\" not found"
        );
    }
}
