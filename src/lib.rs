//! arc-hook: the GitHub Actions runner container hook for Kubernetes, as a library.
#![warn(unreachable_pub)]
pub mod archive;
pub mod check;
pub mod config;
pub(crate) mod docker_options;
#[cfg(feature = "exporter")]
pub mod exporter;
pub(crate) mod file_tree;
pub mod hooks;
pub mod joblog;
pub mod k8s;
pub mod logging;
pub mod objects;
pub(crate) mod plan;
pub mod protocol;
pub(crate) mod quantity;
pub(crate) mod registry;
pub mod render;
#[cfg(feature = "sim")]
pub mod replay;
pub mod runner_args;
pub(crate) mod script;
#[cfg(feature = "sim")]
pub mod sim;
pub(crate) mod template;
pub mod validate;
