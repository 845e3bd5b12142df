//! OS keychain access with a start-up probe.
