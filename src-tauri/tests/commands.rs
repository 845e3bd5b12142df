//! The command adapters through Tauri's mock runtime, against a real lab: what the web UI
//! sends (`invoke(name, args)`), relayed over a real control socket to the shell that owns the
//! engine (as the window process relays to the tray process), and what it gets back, errors as
//! `{code, message}`. Also what a connected window hears: every UI event, and "come to the
//! front" when the app is launched again.

#[path = "../../desktop/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_tunnels::state::StateStore;
use k8s_tunnels::tunnel::health::TunnelState;
use k8s_tunnels_desktop::control::{self, Client, ControlHandle, Listener, Pushed};
use k8s_tunnels_desktop::events::UiEvent;
use k8s_tunnels_desktop::ipc::{self, WindowCommands};
use k8s_tunnels_window::commands;
use serde_json::{Value, json};
use support::{World, wait_for};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{WebviewWindow, WebviewWindowBuilder};

fn invoke(window: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
    get_ipc_response(
        window,
        InvokeRequest {
            cmd: cmd.into(),
            callback: tauri::ipc::CallbackFn(0),
            error: tauri::ipc::CallbackFn(1),
            url: "tauri://localhost".parse().expect("url"),
            body: tauri::ipc::InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|body| body.deserialize::<Value>().expect("json response"))
}

/// Serves the world's shell on a control socket under `dir`, as the tray process does; `opened`
/// counts the times it was asked to start a window.
fn serve(
    world: &World,
    dir: &std::path::Path,
    opened: Arc<AtomicUsize>,
) -> (ControlHandle, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("run dir");
    let socket = dir.join("desktop.sock");
    let listener = Listener::bind(&socket).expect("bind the control socket");
    let handle = world
        .rt
        .block_on(async {
            control::serve(
                listener,
                world.shell.clone(),
                Arc::default(),
                Arc::new(move || {
                    opened.fetch_add(1, Ordering::SeqCst);
                }),
            )
        })
        .expect("serve");
    (handle, socket)
}

fn mock_window(tray: Client) -> (tauri::App<MockRuntime>, WebviewWindow<MockRuntime>) {
    let app = commands::register(mock_builder())
        .manage(tray)
        .build(mock_context(noop_assets()))
        .expect("mock app");
    let window = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .expect("mock window");
    (app, window)
}

fn row<'a>(rows: &'a Value, id: &str) -> &'a Value {
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id}"))
}

#[test]
fn commands_drive_real_tunnels_and_errors_cross_as_code_and_message() {
    let tmp = tempfile::tempdir().expect("tmp");
    let world = World::start(tmp.path());
    tauri::async_runtime::set(world.rt.handle().clone());
    let (_control, socket) = serve(&world, &tmp.path().join("run"), Arc::default());
    let tray = world
        .rt
        .block_on(Client::connect(&socket))
        .expect("connect to the control socket");
    let (_app, window) = mock_window(tray);
    let alpha = world.id("alpha");

    // The catalog: every lab cluster, nothing open.
    let rows = invoke(&window, "clusters", json!({})).expect("clusters");
    assert_eq!(rows.as_array().expect("rows").len(), 3);
    let a = row(&rows, &alpha);
    assert_eq!(a["name"], "alpha");
    assert_eq!(a["cloud"], "aws");
    assert_eq!(a["environment"], "prod");
    assert_eq!(a["source"], "file");
    assert_eq!(a["favourite"], false);
    assert_eq!(a["context"], "k8s-tunnels/alpha");
    assert!(a["tunnel"].is_null());

    // connect → a tunnel on a local port that comes up.
    let status = invoke(&window, "connect", json!({ "id": alpha })).expect("connect");
    let port = status["port"].as_u64().expect("port");
    assert!(port > 0);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_ok());
    let up = wait_for("alpha up", || {
        let rows = invoke(&window, "clusters", json!({})).ok()?;
        let tunnel = row(&rows, &alpha)["tunnel"].clone();
        (tunnel["state"] == "up").then_some(tunnel)
    });
    assert_eq!(up["port"].as_u64(), Some(port));
    assert!(up["latency_ms"].is_u64(), "{up}");
    assert!(up["last_error"].is_null(), "{up}");
    // The kubeconfig entry points kubectl at it.
    let kubeconfig = std::fs::read_to_string(&world.kubeconfig).expect("kubeconfig written");
    assert!(kubeconfig.contains(&format!("127.0.0.1:{port}")));

    // set_favourite persists in the app state and puts the cluster first.
    let gamma = world.id("gamma");
    assert_eq!(
        invoke(
            &window,
            "set_favourite",
            json!({ "id": gamma, "favourite": true })
        ),
        Ok(Value::Null)
    );
    let state = StateStore::new(&world.home).load().expect("state");
    assert!(state.favourites.iter().any(|f| f.0 == gamma));
    let rows = invoke(&window, "clusters", json!({})).expect("clusters");
    assert_eq!(rows[0]["id"], gamma);
    assert_eq!(rows[0]["favourite"], true);

    // use_context and kubectl_command name the cluster's context.
    assert_eq!(
        invoke(&window, "use_context", json!({ "id": alpha })),
        Ok(json!("k8s-tunnels/alpha"))
    );
    assert_eq!(
        invoke(&window, "kubectl_command", json!({ "id": alpha })),
        Ok(json!(
            "kubectl --context 'k8s-tunnels/alpha' get namespaces"
        ))
    );

    // about: not the demo lab; the kubeconfig the world uses; the test keychain keeps nothing.
    let about = invoke(&window, "about", json!({})).expect("about");
    assert_eq!(about["demo_lab"], false, "{about}");
    assert_eq!(
        about["kubeconfig_files"],
        json!([world.kubeconfig.to_string_lossy()]),
        "{about}"
    );
    assert!(about["keychain_unavailable"].is_string(), "{about}");
    assert!(
        about["config_file"]
            .as_str()
            .is_some_and(|p| p.ends_with("config.yaml"))
    );

    // Settings round-trip, with the new start_at_login; bad ones are refused.
    let mut settings = invoke(&window, "settings", json!({})).expect("settings");
    assert_eq!(settings["start_at_login"], false);
    settings["notifications"] = json!(false);
    let saved = invoke(&window, "save_settings", json!({ "settings": settings })).expect("save");
    assert_eq!(saved["notifications"], false);
    assert!(
        !StateStore::new(&world.home)
            .load()
            .expect("state")
            .settings
            .notifications
    );
    settings["kubeconfig_prefix"] = json!("");
    let err = invoke(&window, "save_settings", json!({ "settings": settings })).unwrap_err();
    assert_eq!(err["code"], "invalid", "{err}");

    let sources = invoke(&window, "sources", json!({})).expect("sources");
    assert_eq!(sources[0]["name"], "file");
    assert_eq!(sources[0]["enabled"], true);
    let outcomes = invoke(&window, "refresh_discovery", json!({})).expect("refresh");
    assert_eq!(outcomes, json!([]), "no cloud source configured");

    // disconnect closes it; the activity log tells the story.
    assert_eq!(
        invoke(&window, "disconnect", json!({ "id": alpha })),
        Ok(Value::Null)
    );
    let rows = invoke(&window, "clusters", json!({})).expect("clusters");
    assert!(row(&rows, &alpha)["tunnel"].is_null());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err());
    // The activity log follows the engine's events in its own task: wait for the close.
    let alpha_activity = || -> Vec<String> {
        let activity = invoke(&window, "activity", json!({})).expect("activity");
        activity
            .as_array()
            .expect("lines")
            .iter()
            .filter(|l| l["cluster"] == "alpha")
            .map(|l| l["message"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut messages = alpha_activity();
    while !messages.contains(&"closed".to_string()) && std::time::Instant::now() < deadline {
        k8s_tunnels::sync::pause_blocking(std::time::Duration::from_millis(50));
        messages = alpha_activity();
    }
    assert!(messages.contains(&"up".to_string()), "{messages:?}");
    assert!(messages.contains(&"closed".to_string()), "{messages:?}");

    // Errors are {code, message}.
    for (cmd, args) in [
        ("connect", json!({ "id": "file:nope" })),
        ("disconnect", json!({ "id": "file:nope" })),
        (
            "set_favourite",
            json!({ "id": "file:nope", "favourite": true }),
        ),
        ("use_context", json!({ "id": "file:nope" })),
        ("kubectl_command", json!({ "id": "file:nope" })),
    ] {
        let err = invoke(&window, cmd, args).unwrap_err();
        assert_eq!(err["code"], "not_found", "{cmd}: {err}");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains("file:nope")),
            "{cmd}: {err}"
        );
        assert_eq!(err.as_object().map(|o| o.len()), Some(2), "{cmd}: {err}");
    }
    // A missing argument is Tauri's own error, still a rejection.
    assert!(invoke(&window, "connect", json!({})).is_err());

    // Every command of the contract is registered.
    for name in ipc::CommandName::ALL {
        let res = invoke(&window, name.as_str(), json!({ "id": "file:nope" }));
        if let Err(err) = res {
            assert!(
                !err.to_string().contains("not found"),
                "{} is not registered: {err}",
                name.as_str()
            );
        }
    }

    assert_eq!(
        invoke(&window, "disconnect_all", json!({})),
        Ok(Value::Null)
    );
    world.rt.block_on(world.shell.shutdown());
}

#[test]
fn a_window_hears_every_event_and_comes_to_the_front_when_asked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let world = World::start(tmp.path());
    let opened = Arc::new(AtomicUsize::new(0));
    let (_control, socket) = serve(&world, &tmp.path().join("run"), opened.clone());
    let alpha = world.id("alpha");
    world.rt.block_on(async {
        // With no window connected, "open window" (a second launch) starts one.
        let launcher = Client::connect(&socket).await.expect("connect");
        launcher.open_window().await.expect("open window");
        assert_eq!(opened.load(Ordering::SeqCst), 1);

        // A window subscribes; a tunnel it did not ask for comes up and it hears about it.
        let window = Client::connect(&socket).await.expect("connect");
        let mut pushed = window.subscribe().await.expect("subscribe");
        WindowCommands::connect(&launcher, alpha.clone())
            .await
            .expect("connect alpha");
        let up = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match pushed.recv().await.expect("pushed") {
                    Pushed::Event(UiEvent::Tunnel(status)) if status.state == TunnelState::Up => {
                        return status;
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("a tunnel event with state up");
        assert_eq!(up.cluster.0, alpha);

        // Figures change without a state change (here: a stranger knocking on the port is
        // refused); a window hears them within a second or so.
        let port = up.port;
        {
            use tokio::io::AsyncWriteExt as _;
            let mut knock = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("knock");
            let _ = knock.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
        }
        let refused = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match pushed.recv().await.expect("pushed") {
                    Pushed::Event(UiEvent::Tunnel(status)) if status.refused_connections == 1 => {
                        return status;
                    }
                    _ => {}
                }
            }
        })
        .await;
        assert!(refused.is_ok(), "no figures update reached the window");

        // Now "open window" brings that window to the front instead of starting another.
        launcher.open_window().await.expect("open window");
        tokio::time::timeout(Duration::from_secs(5), async {
            while pushed.recv().await.expect("pushed") != Pushed::Focus {}
        })
        .await
        .expect("focus");
        assert_eq!(
            opened.load(Ordering::SeqCst),
            1,
            "a second window was started"
        );

        // The window going away makes the next "open window" start one again.
        drop(pushed);
        drop(window);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            launcher.open_window().await.expect("open window");
            if opened.load(Ordering::SeqCst) == 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the closed window still counts"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        world.shell.shutdown().await;
    });
}

#[test]
fn a_window_hears_when_the_tray_process_goes_and_calls_fail_clearly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let world = World::start(tmp.path());
    let (control, socket) = serve(&world, &tmp.path().join("run"), Arc::default());
    world.rt.block_on(async {
        let window = Client::connect(&socket).await.expect("connect");
        let mut pushed = window.subscribe().await.expect("subscribe");
        drop(control);
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Pushed::Closed = pushed.recv().await.expect("pushed") {
                    return;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "no Closed after the tray process went");
        let err = window.clusters().await.unwrap_err();
        assert_eq!(err.code, ipc::ErrorCode::Internal);
        assert!(err.message.contains("not running"), "{err}");
        world.shell.shutdown().await;
    });
}
