//! Fault injection: failing or slow API calls, cut exec and log streams and watches cut short.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::SimState;
use super::status::ApiError;

/// Fault knobs. The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Fraction (0..=1) of resource API calls answered with `error_status` instead of being served.
    pub error_rate: f64,
    /// 500 (InternalError) or 429 (TooManyRequests, with `Retry-After: 1`).
    pub error_status: u16,
    /// Delay added before serving every resource API call.
    pub latency: Duration,
    /// Exec streams are cut (socket closed without a status) once this many output bytes were sent.
    pub exec_drop_after_bytes: Option<usize>,
    /// How many exec streams `exec_drop_after_bytes` cuts (each cut uses one); `None`: every one.
    pub exec_drops_left: Option<usize>,
    /// Exec streams are cut (as by a proxy's idle timeout) after this long without a frame in
    /// either direction (WebSocket pings count as traffic), and followed logs after this long
    /// without output.
    pub exec_idle_timeout: Option<Duration>,
    /// Watches end (cleanly, as on a server timeout) after this many events.
    pub watch_close_after_events: Option<usize>,
    /// Followed log streams are cut (connection dropped mid-body) once this many bytes were sent.
    pub log_drop_after_bytes: Option<usize>,
    /// How many log streams `log_drop_after_bytes` cuts; `None`: every one.
    pub log_drops_left: Option<usize>,
    /// Seed of the random generator deciding which calls fail, so a test's failures repeat.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_status: 500,
            latency: Duration::ZERO,
            exec_drop_after_bytes: None,
            exec_drops_left: None,
            exec_idle_timeout: None,
            watch_close_after_events: None,
            log_drop_after_bytes: None,
            log_drops_left: None,
            seed: 0x5eed,
        }
    }
}

struct FaultState {
    faults: Faults,
    rng: StdRng,
    injected: Injected,
}

/// What the fault knobs have done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// API calls answered with an injected error.
    pub errors: u64,
    /// Exec streams cut by `exec_drop_after_bytes`.
    pub exec_cuts: u64,
    /// Log streams cut by `log_drop_after_bytes`.
    pub log_cuts: u64,
}

/// The streams whose bodies faults cut mid-way: exec output and followed logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CutStream {
    Exec,
    Log,
}

/// Shared, runtime-changeable fault knobs.
#[derive(Clone)]
pub struct FaultHandle(Arc<Mutex<FaultState>>);

impl FaultHandle {
    pub(crate) fn new(faults: Faults) -> FaultHandle {
        let rng = StdRng::seed_from_u64(faults.seed);
        FaultHandle(Arc::new(Mutex::new(FaultState {
            faults,
            rng,
            injected: Injected::default(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // A panic while holding this lock cannot leave the knobs half-written; keep going.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current knobs.
    pub fn get(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Replaces all knobs (and reseeds the generator from `faults.seed`).
    pub fn set(&self, faults: Faults) {
        let mut s = self.lock();
        s.rng = StdRng::seed_from_u64(faults.seed);
        s.faults = faults;
    }

    /// Changes some knobs in place: `sim.faults().update(|f| f.error_rate = 0.5)`.
    pub fn update(&self, change: impl FnOnce(&mut Faults)) {
        let mut s = self.lock();
        let old_seed = s.faults.seed;
        change(&mut s.faults);
        if s.faults.seed != old_seed {
            s.rng = StdRng::seed_from_u64(s.faults.seed);
        }
    }

    /// What was injected so far.
    pub fn injected(&self) -> Injected {
        self.lock().injected
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.set(Faults::default());
    }

    /// Decides, for one call, the added latency and whether it fails.
    fn roll(&self) -> (Duration, Option<u16>) {
        let mut s = self.lock();
        let latency = s.faults.latency;
        let rate = s.faults.error_rate.clamp(0.0, 1.0);
        let fail = rate > 0.0 && s.rng.random::<f64>() < rate;
        if fail {
            s.injected.errors += 1;
        }
        (latency, fail.then_some(s.faults.error_status))
    }

    /// After how many bytes a stream of this kind is cut, unless its count of cuts is used up.
    pub(crate) fn drop_after_bytes(&self, stream: CutStream) -> Option<usize> {
        let s = self.lock();
        let (after, left) = match stream {
            CutStream::Exec => (s.faults.exec_drop_after_bytes, s.faults.exec_drops_left),
            CutStream::Log => (s.faults.log_drop_after_bytes, s.faults.log_drops_left),
        };
        match left {
            Some(0) => None,
            _ => after,
        }
    }

    /// Counts one cut of a stream of this kind against its count of cuts (`None`: unlimited);
    /// false when none was left (another stream took it).
    pub(crate) fn take_drop(&self, stream: CutStream) -> bool {
        let mut guard = self.lock();
        let s = &mut *guard;
        let (left, cuts) = match stream {
            CutStream::Exec => (&mut s.faults.exec_drops_left, &mut s.injected.exec_cuts),
            CutStream::Log => (&mut s.faults.log_drops_left, &mut s.injected.log_cuts),
        };
        let taken = match left {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        };
        *cuts += u64::from(taken);
        taken
    }

    pub(crate) fn exec_idle_timeout(&self) -> Option<Duration> {
        self.lock().faults.exec_idle_timeout
    }

    pub(crate) fn watch_close_after_events(&self) -> Option<usize> {
        self.lock().faults.watch_close_after_events
    }
}

/// Whether faults apply to this path: resource calls do, discovery and `/version` do not, so clients
/// can still find the API while it misbehaves.
fn is_resource_path(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.first() {
        Some(&"api") => segs.len() >= 3,
        Some(&"apis") => segs.len() >= 4,
        _ => false,
    }
}

/// Axum middleware applying latency and injected errors.
pub(crate) async fn middleware(
    State(sim): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    if !is_resource_path(req.uri().path()) {
        return next.run(req).await;
    }
    let (latency, fail) = sim.faults.roll();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fail {
        Some(429) => {
            let mut resp = ApiError::too_many_requests().into_response();
            resp.headers_mut()
                .insert("Retry-After", http::HeaderValue::from_static("1"));
            resp
        }
        Some(code) => ApiError::internal(code, "injected fault: the simulator failed this call")
            .into_response(),
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_failures_repeat() {
        let f = Faults {
            error_rate: 0.5,
            ..Faults::default()
        };
        let a = FaultHandle::new(f.clone());
        let b = FaultHandle::new(f);
        let ra: Vec<_> = (0..32).map(|_| a.roll().1).collect();
        let rb: Vec<_> = (0..32).map(|_| b.roll().1).collect();
        assert_eq!(ra, rb);
        assert!(ra.iter().any(|x| x.is_some()) && ra.iter().any(|x| x.is_none()));
    }

    #[test]
    fn cuts_count_down_per_stream() {
        let f = FaultHandle::new(Faults {
            exec_drop_after_bytes: Some(10),
            exec_drops_left: Some(1),
            log_drop_after_bytes: Some(5),
            ..Faults::default()
        });
        assert_eq!(f.drop_after_bytes(CutStream::Exec), Some(10));
        assert!(f.take_drop(CutStream::Exec));
        assert!(!f.take_drop(CutStream::Exec), "one exec cut only");
        assert_eq!(f.drop_after_bytes(CutStream::Exec), None);
        assert!(f.take_drop(CutStream::Log) && f.take_drop(CutStream::Log));
        assert_eq!(
            f.drop_after_bytes(CutStream::Log),
            Some(5),
            "log cuts unlimited"
        );
        assert_eq!(
            f.injected(),
            Injected {
                errors: 0,
                exec_cuts: 1,
                log_cuts: 2
            }
        );
    }

    #[test]
    fn discovery_is_exempt() {
        assert!(!is_resource_path("/version"));
        assert!(!is_resource_path("/api"));
        assert!(!is_resource_path("/api/v1"));
        assert!(!is_resource_path("/apis/batch/v1"));
        assert!(is_resource_path("/api/v1/namespaces/default/pods"));
        assert!(is_resource_path("/apis/batch/v1/jobs"));
    }
}
