//! Cluster discovery sources.

pub mod file;
pub mod validate;
