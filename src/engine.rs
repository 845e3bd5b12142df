//! The engine: owns one tunnel per connected cluster, its health and its events.
