//! The tray process's control socket: how the window process (and a second launch of the app)
//! reach the one process that owns the engine.
//!
//! The tray process keeps the tunnels and never loads GTK or WebKit; the window is a separate
//! process started on demand, so closing it gives all of the webview's memory back. Between the
//! two runs this protocol: newline-delimited JSON over a channel only the same user can open —
//! a Unix socket in the user's runtime dir (the folder is 0700, the socket 0600, and a peer of
//! another user is refused), or on Windows a named pipe whose ACL admits the current user only
//! (see `control/transport.rs`). The window sends the UI's commands as they are ([`Request`],
//! the same names and arguments the UI invokes, generated from the one declaration in
//! `ipc/commands.rs`) and gets back each command's typed reply ([`WindowCommands`] for
//! [`Client`]); after [`Request::Subscribe`] it also hears every UI event and "come to the
//! front".
//!
//! The tray process is a single instance (a file lock next to the socket; on Windows the pipe's
//! first instance): a second launch finds it taken and asks the running one to open its window
//! instead.

mod transport;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt as _, StreamExt as _};
use k8s_tunnels::dirs::AppDirs;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWrite;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};
use tokio_util::sync::CancellationToken;

use crate::events::UiEvent;
use crate::ipc::{ErrorCode, IpcError, WindowCommands};
use crate::shell::Shell;
use k8s_tunnels::sync::lock;

/// The longest line either side accepts: a catalog of thousands of clusters fits many times.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Messages queued for one slow peer before its events are dropped.
const QUEUE: usize = 1024;

/// The control socket's path: `<runtime dir>/desktop.sock` (on Windows the name the pipe's
/// name is derived from).
pub fn socket_path(dirs: &AppDirs) -> PathBuf {
    dirs.runtime.join("desktop.sock")
}

/// Expands the window's commands (declared in `ipc/commands.rs`) into [`Request`], the tray
/// process's dispatch of each to [`WindowCommands`] (the [`Shell`]'s), and the [`Client`]'s
/// typed side of each.
macro_rules! control_protocol {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident : $variant:ident $({ $(
            $(#[doc = $arg_doc:literal])*
            $arg:ident : $arg_ty:ty
        ),* $(,)? })? -> $reply:ty;
    )*) => {
        /// What a peer asks of the tray process: the UI's commands, named and shaped as the UI
        /// invokes them, and the two the window process itself needs.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "cmd", content = "args", rename_all = "snake_case")]
        pub enum Request {
            $(
                $(#[doc = $doc])*
                $variant $({ $( $(#[doc = $arg_doc])* $arg: $arg_ty, )* })?,
            )*
            /// From now on, send this peer every UI event and "come to the front": it is a
            /// window.
            Subscribe,
            /// Show the window: bring a connected one to the front, or start one (a second
            /// launch).
            OpenWindow,
        }

        impl Peer {
            async fn answer(&self, request: Request) -> Result<Value, IpcError> {
                match request {
                    $(
                        Request::$variant $({ $($arg),* })? => encode(
                            WindowCommands::$name(&*self.shell $($(, $arg)*)?).await,
                        ),
                    )*
                    Request::OpenWindow => {
                        if !self.windows.focus() {
                            (self.open_window)();
                        }
                        Ok(Value::Null)
                    }
                    Request::Subscribe => Ok(Value::Null),
                }
            }
        }

        impl WindowCommands for Client {
            $(
                async fn $name(&self $($(, $arg: $arg_ty)*)?) -> Result<$reply, IpcError> {
                    self.command(stringify!($name), Request::$variant $({ $($arg),* })?).await
                }
            )*
        }
    };
}

crate::window_commands!(control_protocol);

/// A request on the wire, numbered so that replies to concurrent requests find their caller.
#[derive(Serialize, Deserialize)]
struct Call {
    id: u64,
    #[serde(flatten)]
    request: Request,
}

/// What the tray process sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Down {
    /// The answer to call `id`: what the command returns, or its error.
    Reply {
        id: u64,
        #[serde(flatten)]
        outcome: Outcome,
    },
    /// A UI event.
    Event(UiEvent),
    /// Come to the front.
    Focus,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Ok(Value),
    Err(IpcError),
}

/// What a subscribed window hears.
// Nearly every message is an event: boxing it would add an allocation to each, to shrink the
// two rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Pushed {
    /// A UI event.
    Event(UiEvent),
    /// The user asked for the window (tray "Open window", a second launch): come to the front.
    Focus,
    /// The tray process is gone (quit or crashed).
    Closed,
}

/// Why the tray process could not take the control socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another tray process of this user holds the instance lock.
    #[error("k8s-tunnels is already running (lock {} is held)", lock.display())]
    AlreadyRunning {
        /// The lock file.
        lock: PathBuf,
    },
    /// The socket or its lock could not be created.
    #[error("cannot listen on {}", path.display())]
    Io {
        /// The socket or lock file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: io::Error,
    },
}

/// The bound control socket, holding the single-instance guard for as long as it lives.
pub struct Listener {
    bound: transport::Bound,
    path: PathBuf,
}

impl Listener {
    /// Takes the single-instance guard for `path` and listens there (replacing a socket a dead
    /// process left behind). On Unix the folder must exist and be the user's own (0700). Call
    /// it inside a tokio runtime (a Windows pipe is registered with it at once).
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        Ok(Self {
            bound: transport::bind(path)?,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The connected windows, so that "Open window" can bring one to the front instead of starting
/// another.
#[derive(Default)]
pub struct Windows {
    next: AtomicU64,
    open: Mutex<HashMap<u64, mpsc::Sender<Down>>>,
}

impl Windows {
    /// Asks every connected window to come to the front; false when none is connected.
    pub fn focus(&self) -> bool {
        let open = lock(&self.open);
        open.values()
            .filter(|tx| tx.try_send(Down::Focus).is_ok())
            .count()
            > 0
    }

    /// How many windows are connected.
    pub fn count(&self) -> usize {
        lock(&self.open).len()
    }

    fn add(self: &Arc<Self>, tx: mpsc::Sender<Down>) -> WindowSlot {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(key, tx);
        WindowSlot {
            windows: Arc::clone(self),
            key,
        }
    }
}

/// A window's place in [`Windows`]; dropping it (the window disconnected) frees it.
struct WindowSlot {
    windows: Arc<Windows>,
    key: u64,
}

impl Drop for WindowSlot {
    fn drop(&mut self) {
        lock(&self.windows.open).remove(&self.key);
    }
}

/// What the tray process does when a peer asks for the window and none is connected.
pub type OpenWindow = Arc<dyn Fn() + Send + Sync>;

/// Serves the control socket until dropped.
pub struct ControlHandle {
    stop: CancellationToken,
    path: PathBuf,
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop.cancel();
        // The instance guard goes with the accept loop.
        transport::remove_leftovers(&self.path);
    }
}

/// Serves `listener`: every peer's requests run against `shell`; [`Request::OpenWindow`] brings
/// a connected window to the front or, with none, calls `open_window`. Must be called inside a
/// tokio runtime.
pub fn serve(
    listener: Listener,
    shell: Arc<Shell>,
    windows: Arc<Windows>,
    open_window: OpenWindow,
) -> io::Result<ControlHandle> {
    let Listener { bound, path } = listener;
    let mut acceptor = transport::Acceptor::new(bound, &path)?;
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = acceptor.accept() => match accepted {
                    Ok(Some(stream)) => stream,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let peer = Peer {
                shell: Arc::clone(&shell),
                windows: Arc::clone(&windows),
                open_window: Arc::clone(&open_window),
            };
            tokio::spawn(peer.run(stream, cancel.child_token()));
        }
    });
    Ok(ControlHandle { stop, path })
}

struct Peer {
    shell: Arc<Shell>,
    windows: Arc<Windows>,
    open_window: OpenWindow,
}

impl Peer {
    async fn run(self, stream: transport::ServerStream, stop: CancellationToken) {
        let (read, write) = tokio::io::split(stream);
        let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
        let (tx, rx) = mpsc::channel::<Down>(QUEUE);
        let writer = tokio::spawn(write_lines(write, rx, stop.clone(), |down: Down| {
            serde_json::to_string(&down)
                .map_err(|e| tracing::error!(error = %e, "control socket: cannot encode a message"))
                .ok()
        }));
        let this = Arc::new(self);
        let mut window: Option<(WindowSlot, crate::shell::FigureWatch)> = None;
        loop {
            let line = tokio::select! {
                _ = stop.cancelled() => break,
                line = lines.next() => match line {
                    Some(Ok(line)) => line,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "control socket: peer sent a bad line");
                        break;
                    }
                    None => break,
                },
            };
            let call: Call = match serde_json::from_str(&line) {
                Ok(call) => call,
                Err(e) => {
                    tracing::debug!(error = %e, "control socket: not a request");
                    break;
                }
            };
            match call.request {
                Request::Subscribe => {
                    if window.is_none() {
                        window = Some((this.windows.add(tx.clone()), this.shell.watch_figures()));
                        tokio::spawn(forward_events(
                            this.shell.subscribe(),
                            tx.clone(),
                            stop.clone(),
                        ));
                    }
                    let _ = tx.send(reply(call.id, Ok(Value::Null))).await;
                }
                request => {
                    let this = Arc::clone(&this);
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let outcome = this.answer(request).await;
                        let _ = tx.send(reply(call.id, outcome)).await;
                    });
                }
            }
        }
        drop(window);
        // Requests still running finish on their own; the writer ends with the last sender.
        drop(tx);
        let _ = writer.await;
    }
}

/// Writes what `rx` carries as lines to `write` until `rx` closes, `stop` fires or the peer
/// goes; `encode` makes the line (`None`: skip the message). Both ends of the socket use it.
async fn write_lines<T>(
    write: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<T>,
    stop: CancellationToken,
    encode: impl Fn(T) -> Option<String>,
) {
    let mut sink = FramedWrite::new(write, LinesCodec::new_with_max_length(MAX_LINE));
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            message = rx.recv() => match message { Some(message) => message, None => return },
        };
        let Some(line) = encode(message) else {
            continue;
        };
        if sink.send(line).await.is_err() {
            return;
        }
    }
}

/// A command's reply as it crosses the socket.
fn encode<T: Serialize>(result: Result<T, IpcError>) -> Result<Value, IpcError> {
    result.and_then(|value| {
        serde_json::to_value(value)
            .map_err(|e| IpcError::new(ErrorCode::Internal, format!("cannot encode: {e}")))
    })
}

fn reply(id: u64, outcome: Result<Value, IpcError>) -> Down {
    Down::Reply {
        id,
        outcome: match outcome {
            Ok(value) => Outcome::Ok(value),
            Err(e) => Outcome::Err(e),
        },
    }
}

async fn forward_events(
    mut events: broadcast::Receiver<crate::events::UiEvent>,
    tx: mpsc::Sender<Down>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => {
                let down = Down::Event(event);
                // A window that stopped reading loses events, not the tray process's memory.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(down) {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Callers waiting for replies; `None` once the connection is gone, so that no later call waits
/// for a reply that cannot come.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Outcome>>>>>;

/// A connection to the tray process. Dropping it closes the connection.
pub struct Client {
    calls: mpsc::Sender<String>,
    pending: Pending,
    next: AtomicU64,
    pushed: broadcast::Sender<Pushed>,
    stop: CancellationToken,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Client {
    /// Connects to the tray process listening on `path`. Must be called inside a tokio runtime.
    pub async fn connect(path: &Path) -> io::Result<Self> {
        let stream = transport::connect(path).await?;
        let (read, write) = tokio::io::split(stream);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (pushed, _) = broadcast::channel(QUEUE);
        let (calls, outgoing) = mpsc::channel::<String>(QUEUE);
        let stop = CancellationToken::new();

        // Calls are encoded by `call`, which reports an encoding error to its caller.
        tokio::spawn(write_lines(write, outgoing, stop.clone(), Some));

        let reader_stop = stop.clone();
        let reader_pending = Arc::clone(&pending);
        let reader_pushed = pushed.clone();
        tokio::spawn(async move {
            let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
            loop {
                let line = tokio::select! {
                    _ = reader_stop.cancelled() => break,
                    line = lines.next() => match line {
                        Some(Ok(line)) => line,
                        _ => break,
                    },
                };
                match serde_json::from_str::<Down>(&line) {
                    Ok(Down::Reply { id, outcome }) => {
                        let waiter = lock(&reader_pending).as_mut().and_then(|p| p.remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(outcome);
                        }
                    }
                    Ok(Down::Event(event)) => {
                        let _ = reader_pushed.send(Pushed::Event(event));
                    }
                    Ok(Down::Focus) => {
                        let _ = reader_pushed.send(Pushed::Focus);
                    }
                    Err(e) => tracing::warn!(error = %e, "control socket: unreadable message"),
                }
            }
            // Callers still waiting, and any later, hear that the tray process is gone.
            lock(&reader_pending).take();
            let _ = reader_pushed.send(Pushed::Closed);
        });

        Ok(Self {
            calls,
            pending,
            next: AtomicU64::new(1),
            pushed,
            stop,
        })
    }

    /// Sends one of the window's commands and reads its typed reply ([`WindowCommands`] for
    /// the client).
    async fn command<R: DeserializeOwned>(
        &self,
        name: &str,
        request: Request,
    ) -> Result<R, IpcError> {
        let reply = self.call(request).await?;
        serde_json::from_value(reply).map_err(|e| {
            IpcError::new(
                ErrorCode::Internal,
                format!("the tray process's reply to {name} does not read: {e}"),
            )
        })
    }

    /// Asks the tray process to show its window: it brings a connected one to the front, or
    /// starts one.
    pub async fn open_window(&self) -> Result<(), IpcError> {
        self.call(Request::OpenWindow).await.map(drop)
    }

    /// Sends a request and waits for its answer: the JSON the command returns, or its error.
    async fn call(&self, request: Request) -> Result<Value, IpcError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let line = serde_json::to_string(&Call { id, request })
            .map_err(|e| IpcError::new(ErrorCode::Internal, format!("cannot encode: {e}")))?;
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(pending) => pending.insert(id, tx),
            None => return Err(gone()),
        };
        if self.calls.send(line).await.is_err() {
            if let Some(pending) = lock(&self.pending).as_mut() {
                pending.remove(&id);
            }
            return Err(gone());
        }
        match rx.await {
            Ok(Outcome::Ok(value)) => Ok(value),
            Ok(Outcome::Err(e)) => Err(e),
            Err(_) => Err(gone()),
        }
    }

    /// Makes this connection a window's: from now on it hears every UI event and "come to the
    /// front" on the returned receiver (and [`Pushed::Closed`] when the tray process goes).
    pub async fn subscribe(&self) -> Result<broadcast::Receiver<Pushed>, IpcError> {
        // Listen first, so that no event sent right after the reply is missed.
        let receiver = self.pushed.subscribe();
        self.call(Request::Subscribe).await?;
        Ok(receiver)
    }
}

fn gone() -> IpcError {
    IpcError::new(
        ErrorCode::Internal,
        "the k8s-tunnels tray process is not running (it quit or crashed); start k8s-tunnels again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_ui_commands_on_the_wire() {
        let call = Call {
            id: 7,
            request: Request::SetFavourite {
                id: "file:a".into(),
                favourite: true,
            },
        };
        let line = serde_json::to_value(&call).expect("encode");
        assert_eq!(
            line,
            serde_json::json!({"id": 7, "cmd": "set_favourite", "args": {"id": "file:a", "favourite": true}})
        );
        let back: Call = serde_json::from_value(serde_json::json!({"id": 1, "cmd": "clusters"}))
            .expect("decode a command without arguments");
        assert_eq!(back.request, Request::Clusters);
    }

    #[test]
    fn every_ui_command_is_a_request_of_the_same_name() {
        let args = serde_json::json!({
            "id": "file:a",
            "favourite": true,
            "settings": k8s_tunnels::state::Settings::default(),
        });
        for name in crate::ipc::CommandName::ALL {
            let with_args = serde_json::json!({"id": 1, "cmd": name.as_str(), "args": args});
            let bare = serde_json::json!({"id": 1, "cmd": name.as_str()});
            let call: Call = serde_json::from_value(with_args)
                .or_else(|_| serde_json::from_value(bare))
                .unwrap_or_else(|e| panic!("{} is no request: {e}", name.as_str()));
            let back = serde_json::to_value(&call).expect("encode");
            assert_eq!(back["cmd"], name.as_str());
        }
    }

    #[test]
    fn replies_carry_the_value_or_the_error() {
        let ok = serde_json::to_value(reply(3, Ok(serde_json::json!([1])))).expect("encode");
        assert_eq!(ok, serde_json::json!({"reply": {"id": 3, "ok": [1]}}));
        let err = reply(
            4,
            Err(IpcError::new(ErrorCode::NotFound, "no such cluster")),
        );
        let line = serde_json::to_string(&err).expect("encode");
        match serde_json::from_str::<Down>(&line).expect("decode") {
            Down::Reply {
                id: 4,
                outcome: Outcome::Err(e),
            } => assert_eq!(e.code, ErrorCode::NotFound),
            other => panic!("{other:?}"),
        }
    }

    // A runtime, since a Windows pipe is registered with one when it is created.
    #[tokio::test]
    async fn a_second_instance_cannot_take_the_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("desktop.sock");
        let first = Listener::bind(&path).expect("first");
        match Listener::bind(&path) {
            Err(BindError::AlreadyRunning { .. }) => {}
            other => panic!("second bind: {:?}", other.map(|l| l.path().to_path_buf())),
        }
        drop(first);
        // The guard goes with the process (here: the listener); a new one takes over, replacing
        // the socket file left behind on Unix.
        #[cfg(unix)]
        assert!(path.exists());
        Listener::bind(&path).expect("after the first is gone");
    }
}
