//! Process signals the front ends stop on.

/// Completes when the process is asked to stop: Ctrl-C (SIGINT) everywhere; SIGTERM on Unix
/// (what a service manager and a desktop session send); on Windows also Ctrl-Break and the
/// console window being closed.
///
/// On a closed console Windows ends the process a few seconds after asking (about 5 s), so the
/// caller's clean shutdown must fit in that time. If a handler cannot be installed, that one
/// request is not heard; Ctrl-C still is where it can be.
pub async fn shutdown_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
        // A stream that could not be set up never fires: the others still can.
        async fn next<S>(stream: std::io::Result<S>, recv: impl AsyncFnOnce(&mut S)) {
            match stream {
                Ok(mut stream) => recv(&mut stream).await,
                Err(error) => {
                    tracing::debug!(%error, "cannot watch a console event");
                    std::future::pending::<()>().await
                }
            }
        }
        tokio::select! {
            _ = next(ctrl_c(), async |s| { s.recv().await; }) => {}
            _ = next(ctrl_break(), async |s| { s.recv().await; }) => {}
            _ = next(ctrl_close(), async |s| { s.recv().await; }) => {}
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
