//! Where the app keeps its files (config, state, cache), per platform.
