//! The safe kubeconfig writer.
