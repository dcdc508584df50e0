//! arc-hook: the GitHub Actions runner container hook for Kubernetes, as a library.
pub mod validate;
pub mod protocol;
pub mod config;
pub mod build;
