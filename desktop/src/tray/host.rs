//! Linux (and the BSDs): whether the desktop has a tray host, an `org.kde.StatusNotifierWatcher`
//! on the session bus, and the moment one appears. tray-icon's `ksni` backend refuses to create
//! an icon without one; once it is created, ksni itself registers the icon again whenever the
//! host restarts. So only a desktop that starts with no host at all needs this: the app runs
//! on without an icon (the window and notifications still work) and shows it when a host comes.

use futures_util::StreamExt as _;
use zbus::fdo::{DBusProxy, NameOwnerChangedStream};
use zbus::names::BusName;

/// The tray host's well-known name.
const WATCHER: &str = "org.kde.StatusNotifierWatcher";

/// A subscription to the tray host's name on the session bus.
pub(super) struct Watch {
    // The connection the subscription lives on.
    _conn: zbus::Connection,
    changes: NameOwnerChangedStream,
    present: bool,
}

impl Watch {
    /// Subscribes to the host's name, then asks whether it has an owner, in that order so that
    /// a host appearing in between is not missed.
    pub(super) async fn open() -> zbus::Result<Self> {
        let conn = zbus::Connection::session().await?;
        let bus = DBusProxy::new(&conn).await?;
        let changes = bus
            .receive_name_owner_changed_with_args(&[(0, WATCHER)])
            .await?;
        let present = bus.name_has_owner(BusName::try_from(WATCHER)?).await?;
        Ok(Self {
            _conn: conn,
            changes,
            present,
        })
    }

    /// Whether a tray host was there when the watch was opened.
    pub(super) fn present(&self) -> bool {
        self.present
    }

    /// Waits for a tray host to take the name; false if the bus connection ended first.
    pub(super) async fn appeared(mut self) -> bool {
        while let Some(change) = self.changes.next().await {
            let owned = change
                .args()
                .map(|args| args.new_owner().is_some())
                .unwrap_or(false);
            if owned {
                return true;
            }
        }
        false
    }
}
