//! The main thread of the tray process, which the tray icon lives on; the app itself, the
//! engine on its tokio runtime, runs on another thread and sends the main thread work (the
//! tray's commands; this module knows nothing of what they are). A `tray-icon` icon belongs to the thread
//! that made it, and macOS and Windows draw it and deliver its clicks only on the main thread,
//! inside its event loop: there the main thread runs a `tao` event loop (no window, no webview;
//! on macOS as an accessory app, so no Dock icon). On Linux the icon is a D-Bus service that
//! needs no loop of ours: the main thread just does the tray's commands as they come.
//!
//! Why `tao`: it is already in the tree (Tauri's window process is built on it), it is what
//! `tray-icon`'s authors pair it with, it wraps the two platform loops without one `unsafe`
//! block of ours (the workspace forbids them), and its proxy wakes the loop from any thread.
//! `winit` would be a second copy of the same thing; hand-written `NSApplication` and
//! `GetMessageW` loops would need `unsafe`.

/// What reaches the main thread: work for its handler, or the app's end.
enum Message<C> {
    Work(C),
    Exit(i32),
}

/// Runs `app` on a thread of its own, handing it `main`; `exit` gets its exit code (101 if it
/// panicked). Prints why and returns false if the thread cannot start.
fn spawn_app<M: Send + 'static>(
    app: impl FnOnce(M) -> i32 + Send + 'static,
    main: M,
    exit: impl FnOnce(i32) + Send + 'static,
) -> bool {
    let spawned = std::thread::Builder::new()
        .name("k8s-tunnels-app".into())
        .spawn(move || {
            let code =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app(main))).unwrap_or(101);
            exit(code);
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            eprintln!("error: cannot start the app's thread: {e}");
            false
        }
    }
}

#[cfg(any(target_os = "macos", windows))]
mod imp {
    use tao::event::Event;
    use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
    use tao::platform::run_return::EventLoopExtRunReturn as _;

    use super::{Message, spawn_app};

    /// A handle to the main thread's event loop, for work of type `C`; any thread may hold
    /// one.
    pub struct MainThread<C: 'static> {
        proxy: EventLoopProxy<Message<C>>,
    }

    impl<C: 'static> Clone for MainThread<C> {
        fn clone(&self) -> Self {
            Self {
                proxy: self.proxy.clone(),
            }
        }
    }

    impl<C: 'static> MainThread<C> {
        /// Hands `work` to the main thread; false once the loop has ended.
        pub fn send(&self, work: C) -> bool {
            self.proxy.send_event(Message::Work(work)).is_ok()
        }
    }

    /// Runs the event loop on this (the main) thread, doing the work sent to it with the
    /// handler `make_handler` builds there, and `app` on another thread, until `app` returns;
    /// returns its exit code. The handler is dropped on this thread before the loop ends.
    pub fn run<C: Send + 'static, H: FnMut(C)>(
        make_handler: impl FnOnce() -> H,
        app: impl FnOnce(MainThread<C>) -> i32 + Send + 'static,
    ) -> i32 {
        let mut event_loop = EventLoopBuilder::<Message<C>>::with_user_event().build();
        #[cfg(target_os = "macos")]
        {
            use tao::platform::macos::{ActivationPolicy, EventLoopExtMacOS as _};
            // A menu-bar app: no Dock icon, no menu bar of its own.
            event_loop.set_activation_policy(ActivationPolicy::Accessory);
            event_loop.set_dock_visibility(false);
        }
        let proxy = event_loop.create_proxy();
        let main = MainThread {
            proxy: proxy.clone(),
        };
        if !spawn_app(app, main, move |code| {
            let _ = proxy.send_event(Message::Exit(code));
        }) {
            return 1;
        }
        let mut handler = Some(make_handler());
        let mut code = 0;
        event_loop.run_return(|event, _, flow| {
            *flow = ControlFlow::Wait;
            match event {
                Event::UserEvent(Message::Work(work)) => {
                    if let Some(handle) = handler.as_mut() {
                        handle(work);
                    }
                }
                Event::UserEvent(Message::Exit(exit)) => {
                    // What the handler holds (the icon) goes before the loop ends.
                    handler = None;
                    code = exit;
                    *flow = ControlFlow::Exit;
                }
                _ => {}
            }
        });
        code
    }
}

#[cfg(not(any(target_os = "macos", windows)))]
mod imp {
    use std::sync::mpsc;

    use super::{Message, spawn_app};

    /// A handle to the main thread, for work of type `C`; any thread may hold one.
    pub struct MainThread<C> {
        sender: mpsc::Sender<Message<C>>,
    }

    impl<C> Clone for MainThread<C> {
        fn clone(&self) -> Self {
            Self {
                sender: self.sender.clone(),
            }
        }
    }

    impl<C> MainThread<C> {
        /// Hands `work` to the main thread; false once the app has ended.
        pub fn send(&self, work: C) -> bool {
            self.sender.send(Message::Work(work)).is_ok()
        }
    }

    /// Does the work sent to this (the main) thread with the handler `make_handler` builds
    /// here, and runs `app` on another thread, until `app` returns; returns its exit code.
    pub fn run<C: Send + 'static, H: FnMut(C)>(
        make_handler: impl FnOnce() -> H,
        app: impl FnOnce(MainThread<C>) -> i32 + Send + 'static,
    ) -> i32 {
        let (sender, messages) = mpsc::channel();
        let main = MainThread {
            sender: sender.clone(),
        };
        if !spawn_app(app, main, move |code| {
            let _ = sender.send(Message::Exit(code));
        }) {
            return 1;
        }
        let mut handle = make_handler();
        for message in messages {
            match message {
                Message::Work(work) => handle(work),
                // What the handler holds (the icon) goes with it, on this thread.
                Message::Exit(code) => return code,
            }
        }
        1
    }
}

pub use imp::{MainThread, run};
