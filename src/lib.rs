//! arc-hook: the GitHub Actions runner container hook for Kubernetes, as a library.
pub mod exporter;
pub mod validate;
