//! The control channel's one platform-specific part: where the tray process listens, how a
//! peer connects, who may, and how a second tray process finds the first. The protocol on top
//! (newline-delimited JSON) is the same everywhere.
//!
//! - **Unix** (Linux, macOS): a Unix socket at the given path in the user's runtime dir (the
//!   folder 0700, the socket 0600); a peer whose uid differs from ours is refused. A file lock
//!   next to the socket (`desktop.lock`) makes the tray process a single instance.
//! - **Windows**: a named pipe whose name is derived from that path
//!   (`\\.\pipe\k8s-tunnels-desktop-<hash>`), with a security descriptor that admits the
//!   current user only (`private_file::create_private_pipe`) and remote clients rejected. The
//!   same file lock makes the single instance; the first instance of the pipe is created with
//!   `FILE_FLAG_FIRST_PIPE_INSTANCE`, so this process never adds an instance to a pipe someone
//!   else created under the name, and a client checks that the pipe it opened is owned by the
//!   current user, so such a pipe is never spoken to.

use std::path::Path;

use super::BindError;

#[cfg(unix)]
pub(super) use unix::*;
#[cfg(windows)]
pub(super) use windows::*;

#[cfg(unix)]
mod unix {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    use super::BindError;

    /// The tray process's end of one connection.
    pub(in crate::control) type ServerStream = tokio::net::UnixStream;
    /// A peer's end.
    pub(in crate::control) type ClientStream = tokio::net::UnixStream;

    /// The bound socket, holding the instance lock.
    pub(in crate::control) struct Bound {
        socket: std::os::unix::net::UnixListener,
        lock: File,
    }

    /// Takes the instance lock next to `path`, then binds the socket (replacing one a dead
    /// process left behind). The folder must exist and be the user's own (0700).
    pub(in crate::control) fn bind(path: &Path) -> Result<Bound, BindError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BindError::Io { path, source }
        };
        let lock = super::instance_lock(path)?;
        // Holding the lock, any socket file here is a leftover of a process that died.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        let socket = std::os::unix::net::UnixListener::bind(path).map_err(io_err(path))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(path))?;
        }
        socket.set_nonblocking(true).map_err(io_err(path))?;
        Ok(Bound { socket, lock })
    }

    /// Accepts the peers of a bound socket; the instance lock lives as long as this.
    pub(in crate::control) struct Acceptor {
        socket: tokio::net::UnixListener,
        me: u32,
        _lock: File,
    }

    impl Acceptor {
        /// Must be called inside a tokio runtime.
        pub(in crate::control) fn new(bound: Bound, path: &Path) -> io::Result<Self> {
            // We created the socket file, so its owner is this process's user.
            let me = {
                use std::os::unix::fs::MetadataExt as _;
                std::fs::metadata(path)?.uid()
            };
            Ok(Self {
                socket: tokio::net::UnixListener::from_std(bound.socket)?,
                me,
                _lock: bound.lock,
            })
        }

        /// The next peer; `None` for one that was refused (another user's).
        pub(in crate::control) async fn accept(&mut self) -> io::Result<Option<ServerStream>> {
            let (stream, _) = self.socket.accept().await?;
            if stream.peer_cred().is_ok_and(|cred| cred.uid() == self.me) {
                Ok(Some(stream))
            } else {
                tracing::warn!("control socket: refused a peer of another user");
                Ok(None)
            }
        }
    }

    /// Connects to the tray process listening at `path`.
    pub(in crate::control) async fn connect(path: &Path) -> io::Result<ClientStream> {
        tokio::net::UnixStream::connect(path).await
    }

    /// Removes what a stopped listener leaves behind: the socket file would only mislead.
    pub(in crate::control) fn remove_leftovers(path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(windows)]
mod windows {
    use std::ffi::OsString;
    use std::io;
    use std::path::Path;
    use std::time::Duration;

    use k8s_tunnels::private_file::{create_private_pipe, owned_by_current_user};
    use tokio::net::windows::named_pipe::{
        ClientOptions, NamedPipeClient, NamedPipeServer, PipeMode, ServerOptions,
    };

    use super::BindError;

    /// The tray process's end of one connection.
    pub(in crate::control) type ServerStream = NamedPipeServer;
    /// A peer's end.
    pub(in crate::control) type ClientStream = NamedPipeClient;

    const ERROR_ACCESS_DENIED: i32 = 5;
    const ERROR_PIPE_BUSY: i32 = 231;
    /// How long a client waits for a free pipe instance (the server makes the next one as soon
    /// as one is taken).
    const BUSY_PATIENCE: Duration = Duration::from_secs(2);

    fn options(first: bool) -> ServerOptions {
        let mut options = ServerOptions::new();
        options
            .first_pipe_instance(first)
            .reject_remote_clients(true)
            .pipe_mode(PipeMode::Byte);
        options
    }

    /// The first instance of the pipe for `path`, and the instance lock.
    pub(in crate::control) struct Bound {
        first: NamedPipeServer,
        name: OsString,
        lock: std::fs::File,
    }

    /// Takes the instance lock next to `path` and creates the pipe's first instance: fails with
    /// [`BindError::AlreadyRunning`] while another tray process has either. Must be called
    /// inside a tokio runtime.
    pub(in crate::control) fn bind(path: &Path) -> Result<Bound, BindError> {
        // The lock file is what keeps a second tray process out everywhere (Wine ignores
        // FILE_FLAG_FIRST_PIPE_INSTANCE); the first-instance flag keeps this process from
        // adding an instance to a pipe someone else created under the name.
        let lock = super::instance_lock(path)?;
        let name = super::pipe_name(path);
        match create_private_pipe(&options(true), &name) {
            Ok(first) => Ok(Bound { first, name, lock }),
            Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED) => {
                Err(BindError::AlreadyRunning { lock: name.into() })
            }
            Err(source) => Err(BindError::Io {
                path: name.into(),
                source,
            }),
        }
    }

    /// Accepts the peers of the pipe: one instance always waits for the next peer. The
    /// instance lock lives as long as this.
    pub(in crate::control) struct Acceptor {
        waiting: NamedPipeServer,
        name: OsString,
        _lock: std::fs::File,
    }

    impl Acceptor {
        /// Must be called inside a tokio runtime.
        pub(in crate::control) fn new(bound: Bound, _path: &Path) -> io::Result<Self> {
            Ok(Self {
                waiting: bound.first,
                name: bound.name,
                _lock: bound.lock,
            })
        }

        /// The next peer. Only the current user can open the pipe (its ACL), so every peer is
        /// accepted.
        pub(in crate::control) async fn accept(&mut self) -> io::Result<Option<ServerStream>> {
            let connected = self.waiting.connect().await;
            // The next instance exists before this one is handed over, so a client never finds
            // none (it would take that for "not running").
            let next = create_private_pipe(&options(false), &self.name)?;
            let peer = std::mem::replace(&mut self.waiting, next);
            connected.map(|()| Some(peer))
        }
    }

    /// Connects to the tray process's pipe for `path`, if it is the current user's.
    pub(in crate::control) async fn connect(path: &Path) -> io::Result<ClientStream> {
        let name = super::pipe_name(path);
        let deadline = tokio::time::Instant::now() + BUSY_PATIENCE;
        let client = loop {
            match ClientOptions::new().open(&name) {
                Ok(client) => break client,
                Err(e)
                    if e.raw_os_error() == Some(ERROR_PIPE_BUSY)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        };
        if owned_by_current_user(&client)? {
            Ok(client)
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the control pipe belongs to another user",
            ))
        }
    }

    /// A pipe disappears with its last handle: nothing is left behind.
    pub(in crate::control) fn remove_leftovers(_path: &Path) {}
}

/// Takes the single-instance lock `<path without extension>.lock` (`desktop.lock` next to
/// `desktop.sock`): held by the open file for as long as the tray process lives, released by
/// the system when it ends, however it ends.
fn instance_lock(path: &Path) -> Result<std::fs::File, BindError> {
    let lock_file = path.with_extension("lock");
    let io_err = |source| BindError::Io {
        path: lock_file.clone(),
        source,
    };
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .map_err(io_err)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(BindError::AlreadyRunning { lock: lock_file })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(e)),
    }
}

/// The named pipe standing for the socket path `path`: a folder per user and per
/// `K8S_TUNNELS_HOME` gives a pipe of its own. FNV-1a, so that every build finds the same name.
#[cfg_attr(not(windows), allow(dead_code))]
fn pipe_name(path: &Path) -> std::ffi::OsString {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    // Windows paths are case-insensitive: one folder, one pipe, however it is spelled.
    for byte in path.to_string_lossy().to_lowercase().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!(r"\\.\pipe\k8s-tunnels-desktop-{hash:016x}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_has_one_pipe_name_however_it_is_spelled() {
        let a = pipe_name(Path::new(r"C:\Users\Ann\AppData\Local\k8s\desktop.sock"));
        let b = pipe_name(Path::new(r"c:\users\ann\appdata\local\k8s\DESKTOP.SOCK"));
        let other = pipe_name(Path::new(r"C:\Users\Bob\AppData\Local\k8s\desktop.sock"));
        assert_eq!(a, b);
        assert_ne!(a, other);
        let text = a.to_string_lossy();
        assert!(text.starts_with(r"\\.\pipe\k8s-tunnels-desktop-"), "{text}");
        assert_eq!(text.len(), r"\\.\pipe\k8s-tunnels-desktop-".len() + 16);
    }

    /// Both ends talk over the platform's channel, for more than one peer in turn (on Windows:
    /// the next pipe instance is there when the first is taken).
    #[tokio::test]
    async fn peers_connect_in_turn_and_both_ends_talk() {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("desktop.sock");
        let bound = bind(&path).expect("bind");
        let mut acceptor = Acceptor::new(bound, &path).expect("acceptor");
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let stream = acceptor.accept().await.expect("accept").expect("same user");
                let (read, mut write) = tokio::io::split(stream);
                let mut line = String::new();
                BufReader::new(read)
                    .read_line(&mut line)
                    .await
                    .expect("read");
                write
                    .write_all(format!("echo {line}").as_bytes())
                    .await
                    .expect("write");
            }
        });
        for peer in ["one", "two"] {
            let stream = connect(&path).await.expect("connect");
            let (read, mut write) = tokio::io::split(stream);
            write
                .write_all(format!("{peer}\n").as_bytes())
                .await
                .expect("send");
            let mut reply = String::new();
            BufReader::new(read)
                .read_line(&mut reply)
                .await
                .expect("reply");
            assert_eq!(reply, format!("echo {peer}\n"));
        }
        server.await.expect("server");
    }
}
