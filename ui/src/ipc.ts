// The one TypeScript mirror of the desktop shell's IPC: `src-tauri/src/commands.rs` (commands)
// and `desktop/src/events.rs` (events). Every name and shape here must match the Rust side
// exactly; `src-tauri/tests/ipc_contract.rs` checks the command and event names against this file.

/** A tunnel's state as users see it (mirrors `k8s_tunnels::tunnel::health::TunnelState`). */
export type TunnelState = "connecting" | "up" | "checking" | "down" | "api_down" | "login_required";

/** Where a cluster runs (mirrors `k8s_tunnels::inventory::Cloud`). */
export type Cloud = "aws" | "gcp" | "azure" | "onprem" | "other";

/** One open tunnel (mirrors `k8s_tunnels::engine::TunnelStatus`). */
export interface TunnelStatus {
  cluster: string;
  name: string;
  context: string;
  state: TunnelState;
  /** Why, for down, API not answering and login required. */
  reason: string | null;
  /** RFC 3339. */
  since: string;
  port: number;
  open_connections: number;
  total_connections: number;
  refused_connections: number;
  bytes_up: number;
  bytes_down: number;
  /** Round trip of the last successful health probe to the edge, in milliseconds. */
  latency_ms: number | null;
  /** Round trip of the last `/version` the cluster's API server answered through the tunnel. */
  api_ms: number | null;
  /** The Kubernetes version the API server reported ("v1.31.4"). */
  kubernetes_version: string | null;
  /** The last error a connection through this tunnel met, if any. */
  last_error: string | null;
}

/** One cluster of the catalog, with its tunnel when one is open. */
export interface ClusterRow {
  id: string;
  name: string;
  cloud: Cloud;
  environment: string;
  /** Where its environment goes in every list (the library's one order; lower first). */
  environment_order: number;
  region: string | null;
  /** `file`, `eks`, `gke`, `vault`, `demo`. */
  source: string;
  /** Why the entry may be out of date (its source failed last time), else null. */
  stale: string | null;
  favourite: boolean;
  /** The kubectl context that reaches it. */
  context: string;
  /** What "Copy kubectl command" copies, quoted for a POSIX shell: in the row, so that the
   *  click itself writes the clipboard (a webview allows that only inside the user's click). */
  kubectl: string;
  tunnel: TunnelStatus | null;
}

/** User settings (mirrors `k8s_tunnels::state::Settings`). */
export interface Settings {
  kubeconfig_prefix: string;
  /** null = `KUBECONFIG` or `~/.kube/config`, as kubectl. */
  kubeconfig_path: string | null;
  switch_context_on_connect: boolean;
  notifications: boolean;
  start_at_login: boolean;
  /** Reopen, at the next start, the tunnels that were on at Quit. */
  reconnect_at_start: boolean;
}

/** A configured discovery source, for the settings page (read-only: edited in config.yaml). */
export interface SourceInfo {
  name: string;
  enabled: boolean;
  /** One line: profiles and regions, projects, Vault address and prefix, inventory path. */
  detail: string;
}

/** Where the app's files are and how it runs (mirrors `k8s_tunnels_desktop::shell::AboutInfo`). */
export interface AboutInfo {
  /** The version the app was built as ("0.1.0"), the same the CLI and the tray menu show. */
  version: string;
  /** config.yaml: discovery sources and Access settings (it may not exist yet). */
  config_file: string;
  config_exists: boolean;
  /** The inventory file of clusters listed by hand. */
  inventory_file: string;
  /** The kubeconfig files the app writes its entries into. */
  kubeconfig_files: string[];
  /** Nothing is configured: the clusters are the built-in demo lab's. */
  demo_lab: boolean;
  /** Why sign-ins last only until the app quits (no usable keychain); null when they are kept. */
  keychain_unavailable: string | null;
}

/** The result of one discovery source in the last refresh. */
export interface SourceOutcome {
  source: string;
  clusters: number;
  /** One line per failed scope ("eu-west-1: AccessDenied …"). */
  errors: string[];
  /** Discovered entries rejected as invalid, one line each. */
  rejected: string[];
}

/** One line of the activity log. */
export interface Activity {
  /** RFC 3339. */
  at: string;
  level: "info" | "warning" | "error";
  /** Cluster display name, when the entry is about one. */
  cluster: string | null;
  message: string;
}

/** Every error that crosses the IPC boundary. Never holds a secret. */
export interface IpcError {
  code: ErrorCode;
  message: string;
}

export type ErrorCode =
  | "not_found"
  | "invalid"
  | "tunnel"
  | "kubeconfig"
  | "discovery"
  | "login_required"
  | "state"
  | "internal";

/** Command name → [arguments, result]. Arguments are passed to `invoke` as named fields. */
export interface Commands {
  clusters: [Record<string, never>, ClusterRow[]];
  connect: [{ id: string }, TunnelStatus];
  disconnect: [{ id: string }, null];
  disconnect_all: [Record<string, never>, null];
  set_favourite: [{ id: string; favourite: boolean }, null];
  /** Switches kubectl's current context; returns the context name. */
  use_context: [{ id: string }, string];
  /** `kubectl --context '<context>' get namespaces`, quoted for a POSIX shell. */
  kubectl_command: [{ id: string }, string];
  /** Runs discovery now; progress and the outcome come as `discovery` events too. */
  refresh_discovery: [Record<string, never>, SourceOutcome[]];
  settings: [Record<string, never>, Settings];
  save_settings: [{ settings: Settings }, Settings];
  sources: [Record<string, never>, SourceInfo[]];
  /** Where the app's files are and how it runs: what a first run explains. */
  about: [Record<string, never>, AboutInfo];
  /** The most recent activity, newest last (at most 200). */
  activity: [Record<string, never>, Activity[]];
}

export type CommandName = keyof Commands;

/** Event name → payload. */
export interface Events {
  /** A tunnel changed state (or its figures changed: sent at most once a second per tunnel). */
  tunnel: TunnelStatus;
  /** A tunnel was closed. */
  tunnel_closed: { cluster: string; name: string };
  /** Discovery progress: `running` with done/total while it runs, then `finished`. */
  discovery:
    | { phase: "running"; source: string; done: number; total: number }
    | { phase: "finished"; outcomes: SourceOutcome[] };
  /** The catalog changed (discovery finished, a favourite changed): fetch `clusters` again. */
  clusters_changed: Record<string, never>;
  /** A new activity log line. */
  activity: Activity;
  /** Login state of an Access application (from issue 4's login events). */
  login:
    | { kind: "expiring"; application: string; seconds_left: number }
    | { kind: "required"; application: string }
    /** A browser login runs: sign in at `url` (opened in a browser when `browser_opened`); the
     * sign-in page must show `code`, the code of this login's key. */
    | { kind: "sign_in"; application: string; url: string; browser_opened: boolean; code: string };
}

export type EventName = keyof Events;

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

export const EVENT_NAMES: readonly EventName[] = [
  "tunnel",
  "tunnel_closed",
  "discovery",
  "clusters_changed",
  "activity",
  "login",
] as const;

type Invoke = <T>(cmd: string, args?: Record<string, unknown>) => Promise<T>;
type Listen = <T>(
  event: string,
  handler: (event: { payload: T }) => void,
) => Promise<() => void>;

/** Typed access to the shell; built over `@tauri-apps/api` in the app, over mocks in tests. */
export class Ipc {
  constructor(
    private readonly invokeFn: Invoke,
    private readonly listenFn: Listen,
  ) {}

  call<C extends CommandName>(
    cmd: C,
    ...args: Commands[C][0] extends Record<string, never> ? [] : [Commands[C][0]]
  ): Promise<Commands[C][1]> {
    return this.invokeFn<Commands[C][1]>(cmd, args[0] as Record<string, unknown> | undefined);
  }

  on<E extends EventName>(event: E, handler: (payload: Events[E]) => void): Promise<() => void> {
    return this.listenFn<Events[E]>(event, (e) => handler(e.payload));
  }
}

/** True when a rejected `invoke` carries our `{code, message}` error. */
export function isIpcError(e: unknown): e is IpcError {
  return (
    typeof e === "object" && e !== null && "code" in e && "message" in e &&
    typeof (e as IpcError).message === "string"
  );
}
