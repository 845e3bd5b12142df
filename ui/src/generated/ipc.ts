// Generated from the Rust side by `k8s_tunnels_desktop::ipc::typescript` (the commands declared in
// desktop/src/ipc/commands.rs, the events in desktop/src/events.rs, the types they carry): do not
// edit. Regenerate with `UPDATE_TS=1 cargo nextest run -p k8s-tunnels-desktop --test typescript`;
// that test fails while this file differs from what Rust generates.

/**
 * Where the app's files are and how it runs, for the window (`about`).
 */
export type AboutInfo = {
  /**
   * The version the app was built as (the workspace's; `k8s-tunnels --version` says the same).
   */
  version: string,
  /**
   * config.yaml: discovery sources and Access settings (it may not exist yet).
   */
  config_file: string,
  /**
   * Whether it exists.
   */
  config_exists: boolean,
  /**
   * The inventory file of clusters listed by hand (`RunInfo::inventory_file`).
   */
  inventory_file: string,
  /**
   * The kubeconfig files the app writes its entries into; empty if kubectl's own setting
   * (`KUBECONFIG`, the home folder) cannot be read.
   */
  kubeconfig_files: Array<string>,
  /**
   * Nothing is configured: the clusters are the built-in demo lab's.
   */
  demo_lab: boolean,
  /**
   * Why sign-ins last only until the app quits (no usable keychain); `None` when kept.
   */
  keychain_unavailable: string | null, };

/**
 * One line of the activity log.
 */
export type Activity = {
  /**
   * RFC 3339.
   */
  at: string,
  /**
   * Level.
   */
  level: Level,
  /**
   * Cluster display name, when the entry is about one.
   */
  cluster: string | null,
  /**
   * What happened.
   */
  message: string, };

/**
 * Where a cluster runs.
 */
export type Cloud = "aws" | "gcp" | "azure" | "onprem" | "other";

/**
 * One cluster of the catalog, with its tunnel when one is open.
 */
export type ClusterRow = {
  /**
   * Cluster id.
   */
  id: string,
  /**
   * Display name.
   */
  name: string,
  /**
   * Cloud.
   */
  cloud: Cloud,
  /**
   * Environment.
   */
  environment: string,
  /**
   * Where its environment goes in every list: its place among the catalog's environments in
   * the library's order (`k8s_tunnels::inventory::compare_environments`), which the window
   * follows rather than sorting names itself.
   */
  environment_order: number,
  /**
   * Region or project.
   */
  region: string | null,
  /**
   * Source that found it.
   */
  source: string,
  /**
   * Why it may be out of date.
   */
  stale: string | null,
  /**
   * Pinned at the top.
   */
  favourite: boolean,
  /**
   * The kubectl context that reaches it.
   */
  context: string,
  /**
   * What "Copy kubectl command" copies (`kubectl_line`): in the row, so that the window
   * writes the clipboard inside the click itself, which a webview only allows there.
   */
  kubectl: string,
  /**
   * Its open tunnel.
   */
  tunnel: TunnelStatus | null, };

/**
 * Discovery progress (the `discovery` event's payload).
 */
export type DiscoveryPhase = { "phase": "running",
  /**
   * Source name.
   */
  source: string,
  /**
   * Scopes done.
   */
  done: number,
  /**
   * Scopes to scan.
   */
  total: number, } | { "phase": "finished",
  /**
   * Per-source outcome.
   */
  outcomes: Array<SourceOutcome>, };

/**
 * What kind of error (`ErrorCode` in the UI).
 */
export type ErrorCode = "not_found" | "invalid" | "tunnel" | "kubeconfig" | "discovery" | "login_required" | "state" | "internal";

/**
 * Every error that crosses the IPC boundary. Never holds a secret: messages come from the
 * library's errors, which never carry one.
 */
export type IpcError = {
  /**
   * What kind of error.
   */
  code: ErrorCode,
  /**
   * What went wrong, for people.
   */
  message: string, };

/**
 * How serious an activity line is.
 */
export type Level = "info" | "warning" | "error";

/**
 * Login state of an Access application (the `login` event's payload).
 */
export type LoginNotice = { "kind": "expiring",
  /**
   * The Access application (hostname).
   */
  application: string,
  /**
   * Seconds until it ends.
   */
  seconds_left: number, } | { "kind": "required",
  /**
   * The Access application (hostname).
   */
  application: string, } | { "kind": "sign_in",
  /**
   * The Access application (hostname).
   */
  application: string,
  /**
   * Where to sign in (carries only a one-time public key).
   */
  url: string,
  /**
   * Whether a browser was opened at it.
   */
  browser_opened: boolean,
  /**
   * The code of the login's key, which the sign-in page must show too.
   */
  code: string, };

/**
 * User settings.
 */
export type Settings = {
  /**
   * Prefix of the kubeconfig entries the app owns (`k8s-tunnels/` → `k8s-tunnels/prod-eu`).
   */
  kubeconfig_prefix: string,
  /**
   * The kubeconfig to write; `None` means `KUBECONFIG` or `~/.kube/config`, as kubectl.
   */
  kubeconfig_path: string | null,
  /**
   * Switch kubectl's current context to a cluster when its tunnel connects.
   */
  switch_context_on_connect: boolean,
  /**
   * Desktop notifications on tunnel drops and expiring logins.
   */
  notifications: boolean,
  /**
   * Start the desktop app when the user logs in.
   */
  start_at_login: boolean,
  /**
   * Reopen, when the desktop app starts, the tunnels that were on when it quit.
   */
  reconnect_at_start: boolean, };

/**
 * A configured discovery source, described for a settings page.
 */
export type SourceInfo = {
  /**
   * `file`, `eks`, `gke`, `vault`.
   */
  name: string,
  /**
   * Whether it runs.
   */
  enabled: boolean,
  /**
   * One line: profiles and regions, projects, Vault address and prefix, inventory path.
   */
  detail: string, };

/**
 * The result of one discovery source in the last refresh.
 */
export type SourceOutcome = {
  /**
   * Source name.
   */
  source: string,
  /**
   * Clusters found.
   */
  clusters: number,
  /**
   * One line per failed scope.
   */
  errors: Array<string>,
  /**
   * Rejected entries, one line each.
   */
  rejected: Array<string>, };

/**
 * `tunnel_closed` payload.
 */
export type TunnelClosed = {
  /**
   * Cluster id.
   */
  cluster: string,
  /**
   * Cluster display name.
   */
  name: string, };

/**
 * The state of a tunnel as users see it.
 */
export type TunnelState = "connecting" | "up" | "checking" | "down" | "api_down" | "login_required";

/**
 * The status of one open tunnel.
 */
export type TunnelStatus = {
  /**
   * Cluster id.
   */
  cluster: string,
  /**
   * Cluster display name.
   */
  name: string,
  /**
   * kubectl context that reaches it.
   */
  context: string,
  /**
   * State.
   */
  state: TunnelState,
  /**
   * Why, for down and login required.
   */
  reason: string | null,
  /**
   * Since when (RFC 3339).
   */
  since: string,
  /**
   * Local SOCKS5 port on 127.0.0.1.
   */
  port: number,
  /**
   * Connections piping now.
   */
  open_connections: number,
  /**
   * Connections carried since the tunnel opened.
   */
  total_connections: number,
  /**
   * Local clients refused.
   */
  refused_connections: number,
  /**
   * Bytes sent to the cluster.
   */
  bytes_up: number,
  /**
   * Bytes received from the cluster.
   */
  bytes_down: number,
  /**
   * Round trip of the last successful health probe to the edge, in milliseconds.
   */
  latency_ms: number | null,
  /**
   * Round trip of the last `/version` the cluster's API server answered through the tunnel,
   * in milliseconds; `None` while it does not answer.
   */
  api_ms: number | null,
  /**
   * The Kubernetes version the API server reported (`v1.31.4`).
   */
  kubernetes_version: string | null,
  /**
   * The last error a connection through this tunnel met, if any.
   */
  last_error: string | null, };

/** Command name → [arguments, reply]. Arguments are passed to `invoke` as named fields; a rejected command carries an `IpcError`. */
export interface Commands {
  /**
   * Every cluster with its tunnel, favourites first, then by cloud, environment and
   * name.
   */
  clusters: [Record<string, never>, Array<ClusterRow>];
  /** Opens a cluster's tunnel (switching kubectl's context when the settings say so). */
  connect: [{ /** Cluster id. */ id: string }, TunnelStatus];
  /** Closes a cluster's tunnel; closing one that is not open is not an error. */
  disconnect: [{ /** Cluster id. */ id: string }, null];
  /** Closes every tunnel. */
  disconnect_all: [Record<string, never>, null];
  /** Pins or unpins a cluster. */
  set_favourite: [{ /** Cluster id. */ id: string; /** Pinned or not. */ favourite: boolean }, null];
  /** Switches kubectl's current context to the cluster's; returns the context name. */
  use_context: [{ /** Cluster id. */ id: string }, string];
  /** `kubectl --context '<context>' get namespaces`, quoted for a POSIX shell. */
  kubectl_command: [{ /** Cluster id. */ id: string }, string];
  /** Runs discovery now; progress and the outcome come as `discovery` events too. */
  refresh_discovery: [Record<string, never>, Array<SourceOutcome>];
  /** The settings. */
  settings: [Record<string, never>, Settings];
  /** Validates and saves the settings; returns them as saved. */
  save_settings: [{ /** The new settings. */ settings: Settings }, Settings];
  /** The discovery sources, for the settings page (read-only: edited in config.yaml). */
  sources: [Record<string, never>, Array<SourceInfo>];
  /** Where the app's files are and how it runs: what a first run explains. */
  about: [Record<string, never>, AboutInfo];
  /** The most recent activity, newest last (at most 200 lines). */
  activity: [Record<string, never>, Array<Activity>];
}

export type CommandName = keyof Commands;

export const COMMAND_NAMES: readonly CommandName[] = [
  "clusters",
  "connect",
  "disconnect",
  "disconnect_all",
  "set_favourite",
  "use_context",
  "kubectl_command",
  "refresh_discovery",
  "settings",
  "save_settings",
  "sources",
  "about",
  "activity",
] as const;

/** Event name → payload. */
export interface Events {
  /** A tunnel changed state (or its figures changed: sent at most once a second per tunnel). */
  tunnel: TunnelStatus;
  /** A tunnel was closed. */
  tunnel_closed: TunnelClosed;
  /** Discovery progress: `running` with done/total while it runs, then `finished`. */
  discovery: DiscoveryPhase;
  /**
   * The catalog or the favourites changed (discovery finished, a favourite changed): fetch
   * `clusters` again.
   */
  clusters_changed: Record<string, never>;
  /** A new activity log line. */
  activity: Activity;
  /** Login state of an Access application. */
  login: LoginNotice;
}

export type EventName = keyof Events;

export const EVENT_NAMES: readonly EventName[] = [
  "tunnel",
  "tunnel_closed",
  "discovery",
  "clusters_changed",
  "activity",
  "login",
] as const;
