//! arc-hook: the GitHub Actions runner container hook for Kubernetes, as a library.
pub mod build;
pub mod config;
pub mod docker_options;
#[cfg(feature = "exporter")]
pub mod exporter;
pub mod hooks;
pub mod k8s;
pub mod protocol;
pub mod registry;
pub mod render;
#[cfg(feature = "sim")]
pub mod replay;
pub mod runner_args;
#[cfg(feature = "sim")]
pub mod sim;
pub mod template;
pub mod validate;
