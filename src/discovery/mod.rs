//! Cluster discovery sources.

pub mod file;
