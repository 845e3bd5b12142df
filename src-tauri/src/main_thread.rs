//! The main thread of the tray process. macOS and Windows draw a tray icon and deliver its
//! clicks only on the main thread, inside its event loop: there the main thread runs a `tao`
//! event loop (no window, no webview; on macOS as an accessory app, so no Dock icon) and the
//! app itself, the engine on its tokio runtime, runs on another thread. Linux's tray is a
//! D-Bus service that needs no loop: the app runs on the main thread itself.
//!
//! Why `tao`: it is already in the tree (Tauri's window process is built on it), it is what
//! `tray-icon`'s authors pair it with, it wraps the two platform loops without one `unsafe`
//! block of ours (the workspace forbids them), and its proxy wakes the loop from any thread.
//! `winit` would be a second copy of the same thing; hand-written `NSApplication` and
//! `GetMessageW` loops would need `unsafe`.

#[cfg(any(target_os = "macos", windows))]
mod imp {
    use tao::event::Event;
    use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
    use tao::platform::run_return::EventLoopExtRunReturn as _;

    use crate::tray::native::{self, Command};

    enum Message {
        Tray(Command),
        Exit(i32),
    }

    /// A handle to the main thread's event loop, for the tray; any thread may hold one.
    #[derive(Clone)]
    pub struct MainThread {
        proxy: EventLoopProxy<Message>,
    }

    impl MainThread {
        /// Hands `command` to the tray on the main thread; false once the loop has ended.
        pub(crate) fn send(&self, command: Command) -> bool {
            self.proxy.send_event(Message::Tray(command)).is_ok()
        }
    }

    /// Runs the event loop on this (the main) thread and `app` on another, until `app`
    /// returns; returns its exit code.
    pub fn run(app: impl FnOnce(MainThread) -> i32 + Send + 'static) -> i32 {
        let mut event_loop = EventLoopBuilder::<Message>::with_user_event().build();
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
        let spawned = std::thread::Builder::new()
            .name("k8s-tunnels-app".into())
            .spawn(move || {
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app(main)))
                    .unwrap_or(101);
                let _ = proxy.send_event(Message::Exit(code));
            });
        if let Err(e) = spawned {
            eprintln!("error: cannot start the app's thread: {e}");
            return 1;
        }
        let mut tray = None;
        let mut code = 0;
        event_loop.run_return(|event, _, flow| {
            *flow = ControlFlow::Wait;
            match event {
                Event::UserEvent(Message::Tray(command)) => native::handle(&mut tray, command),
                Event::UserEvent(Message::Exit(exit)) => {
                    // The icon goes before the loop ends, on the thread that made it.
                    tray = None;
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
    /// Where a main-thread loop would be: Linux's tray needs none.
    #[derive(Clone, Debug, Default)]
    pub struct MainThread {
        _none: (),
    }

    /// Runs `app` on this thread; returns its exit code.
    pub fn run(app: impl FnOnce(MainThread) -> i32 + Send + 'static) -> i32 {
        app(MainThread::default())
    }
}

pub use imp::{MainThread, run};
