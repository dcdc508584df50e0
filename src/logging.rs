//! The internal log (`ARC_HOOK_LOG`): which events reach stderr, and how a bad filter is reported.

use std::str::FromStr;

use tracing::level_filters::LevelFilter;

/// arc-hook's own events when `ARC_HOOK_LOG` is unset: warnings and errors.
pub(crate) const DEFAULT_FILTER: &str = "arc_hook=warn";

/// The `tracing` filter for `ARC_HOOK_LOG`'s value: a bare level (`debug`, or a directive with
/// no target) applies to arc-hook's own events only; a dependency logs only where a directive
/// names it (`kube_client=debug`). Dependencies would otherwise fill the job log: kube-client
/// logs every failed connection attempt at ERROR, beside the hook's own one-line failure.
/// A bare word that is no level is refused (`tracing` would read `debgu` as a target at every
/// level, and log nothing the user wanted).
pub(crate) fn own_directives(value: &str) -> Result<String, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| match LevelFilter::from_str(d) {
            Ok(level) => Ok(format!("arc_hook={level}")),
            Err(_) if !d.contains('=') && !d.contains('[') => Err(format!(
                "{d:?} is neither a level (error, warn, info, debug, trace, off) nor TARGET=LEVEL"
            )),
            Err(_) => Ok(d.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.join(","))
}

/// Installs the stderr log (never stdout, which is the job log's and the protocol's). An invalid
/// `ARC_HOOK_LOG` is named once on stderr, and the default used.
pub fn init(value: Option<String>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, refused) = match value {
        None => (tracing_subscriber::EnvFilter::new(DEFAULT_FILTER), None),
        Some(v) => match own_directives(&v)
            .and_then(|d| tracing_subscriber::EnvFilter::try_new(d).map_err(|e| e.to_string()))
        {
            Ok(f) => (f, None),
            Err(e) => (
                tracing_subscriber::EnvFilter::new(DEFAULT_FILTER),
                Some((v, e)),
            ),
        },
    };
    // Dependencies log whole messages at TRACE (a WebSocket frame carrying a pushed start script
    // holds the step's secrets): only arc-hook's own events go below DEBUG, whatever the filter.
    let no_dependency_trace = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("arc_hook") || *meta.level() <= tracing::Level::DEBUG
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_filter(filter)
        .with_filter(no_dependency_trace);
    let _ = tracing_subscriber::registry().with(layer).try_init();
    if let Some((v, e)) = refused {
        tracing::warn!(
            "ignoring ARC_HOOK_LOG={v:?}: {e}; logging arc-hook's warnings (the default)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(v: &str) -> Result<(), String> {
        own_directives(v)
            .and_then(|d| tracing_subscriber::EnvFilter::try_new(d).map_err(|e| e.to_string()))
            .map(drop)
    }

    #[test]
    fn bare_levels_are_the_hooks_own() {
        let ok = |v: &str| own_directives(v).expect("valid");
        assert_eq!(ok("debug"), "arc_hook=debug");
        assert_eq!(ok("INFO"), "arc_hook=info");
        assert_eq!(
            ok("info, kube_client=debug"),
            "arc_hook=info,kube_client=debug"
        );
        assert_eq!(ok("arc_hook::k8s=trace"), "arc_hook::k8s=trace");
        assert_eq!(ok("off"), "arc_hook=off");
    }

    #[test]
    fn a_bad_filter_is_refused_so_the_default_is_used() {
        assert_eq!(
            filter("debgu"),
            Err("\"debgu\" is neither a level (error, warn, info, debug, trace, off) nor TARGET=LEVEL".into())
        );
        assert!(filter("kube=loud").is_err());
        assert!(filter("debug,kube_client=info").is_ok());
    }
}
