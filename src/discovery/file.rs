//! The inventory file: the zero-configuration cluster source.
