// The window's logic without the DOM: filtering, grouping, formatting and the state reducer that
// folds command results and shell events into what the window shows. Everything here is pure so
// the unit tests drive it directly.
import {
  isIpcError,
  type Activity,
  type ClusterRow,
  type Cloud,
  type Events,
  type SourceOutcome,
  type TunnelState,
  type TunnelStatus,
} from "./ipc";

// ---------------------------------------------------------------------------------------------
// Filtering and grouping

/** What the search box and the filter selects hold; an empty string means "any". */
export interface Filters {
  query: string;
  cloud: Cloud | "";
  environment: string;
  region: string;
}

export const NO_FILTERS: Filters = { query: "", cloud: "", environment: "", region: "" };

/** True when any filter narrows the list (the window then expands every group). */
export function isFiltering(f: Filters): boolean {
  return f.query.trim() !== "" || f.cloud !== "" || f.environment !== "" || f.region !== "";
}

/**
 * Whether a row passes the filters. The search box matches, case-insensitively and word by word,
 * the name, the id, the kubectl context, the region and the environment, so "prod eu" finds
 * `payments` in production in eu-west-1.
 */
export function matches(row: ClusterRow, f: Filters): boolean {
  if (f.cloud !== "" && row.cloud !== f.cloud) return false;
  if (f.environment !== "" && row.environment !== f.environment) return false;
  if (f.region !== "" && (row.region ?? "") !== f.region) return false;
  const words = f.query.toLowerCase().split(/\s+/).filter((w) => w !== "");
  if (words.length === 0) return true;
  const haystack = [row.name, row.id, row.context, row.region ?? "", row.environment, row.cloud]
    .join(" ")
    .toLowerCase();
  return words.every((w) => haystack.includes(w));
}

export function filterRows(rows: readonly ClusterRow[], f: Filters): ClusterRow[] {
  return rows.filter((r) => matches(r, f));
}

/** Clouds in the order the tray lists them. */
export const CLOUD_ORDER: readonly Cloud[] = ["aws", "gcp", "azure", "onprem", "other"];

export const CLOUD_LABELS: Record<Cloud, string> = {
  aws: "AWS",
  gcp: "Google Cloud",
  azure: "Azure",
  onprem: "On-premises",
  other: "Other",
};

/**
 * Orders environments by the place the library gives each (`environment_order`, the same order
 * the tray and the CLI use: production first, then the usual stages, then the rest), read from
 * the rows that carry them.
 */
export function environmentOrder(rows: readonly ClusterRow[]): (a: string, b: string) => number {
  const place = new Map<string, number>();
  for (const r of rows) place.set(r.environment, r.environment_order);
  return (a, b) => (place.get(a) ?? Infinity) - (place.get(b) ?? Infinity) || (a < b ? -1 : a > b ? 1 : 0);
}

/** By name, then id so equal names keep a stable order. */
export function compareRows(a: ClusterRow, b: ClusterRow): number {
  return a.name.localeCompare(b.name) || a.id.localeCompare(b.id);
}

export interface EnvironmentGroup {
  environment: string;
  rows: ClusterRow[];
}

export interface CloudGroup {
  cloud: Cloud;
  environments: EnvironmentGroup[];
  count: number;
}

/** What the cluster list shows: favourites first (flat), then everything else by cloud → env. */
export interface Listing {
  favourites: ClusterRow[];
  groups: CloudGroup[];
}

/**
 * Splits the (already filtered) rows into the favourites section and the cloud → environment
 * groups. A favourite is listed once, at the top, as in the tray's first section.
 */
export function listing(rows: readonly ClusterRow[]): Listing {
  const favourites = rows.filter((r) => r.favourite).sort(compareRows);
  const byCloud = new Map<Cloud, Map<string, ClusterRow[]>>();
  for (const r of rows) {
    if (r.favourite) continue;
    let envs = byCloud.get(r.cloud);
    if (!envs) byCloud.set(r.cloud, (envs = new Map()));
    let list = envs.get(r.environment);
    if (!list) envs.set(r.environment, (list = []));
    list.push(r);
  }
  const byEnvironment = environmentOrder(rows);
  const groups: CloudGroup[] = [];
  for (const cloud of CLOUD_ORDER) {
    const envs = byCloud.get(cloud);
    if (!envs) continue;
    const environments = [...envs.keys()].sort(byEnvironment).map((environment) => ({
      environment,
      rows: envs.get(environment)!.sort(compareRows),
    }));
    groups.push({ cloud, environments, count: environments.reduce((n, e) => n + e.rows.length, 0) });
  }
  return { favourites, groups };
}

/** The distinct values the filter selects offer, sorted as the list is. */
export function filterOptions(rows: readonly ClusterRow[]): {
  clouds: Cloud[];
  environments: string[];
  regions: string[];
} {
  const clouds = new Set(rows.map((r) => r.cloud));
  return {
    clouds: CLOUD_ORDER.filter((c) => clouds.has(c)),
    environments: [...new Set(rows.map((r) => r.environment))].sort(environmentOrder(rows)),
    regions: [...new Set(rows.flatMap((r) => (r.region ? [r.region] : [])))].sort(),
  };
}

// ---------------------------------------------------------------------------------------------
// Formatting

/** Bytes in binary units: "0 B", "512 B", "1.5 KiB", "12 MiB"; one decimal below ten. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${n} B`;
  const shown = v < 10 ? Math.round(v * 10) / 10 : Math.round(v);
  // 1023.96 KiB rounds to 1024: say 1 MiB instead.
  if (shown >= 1024 && i < units.length - 1) return `1 ${units[i + 1]}`;
  return `${shown} ${units[i]}`;
}

/** A probe round trip: "—" before the first probe, "<1 ms", "42 ms", "1.2 s". */
export function formatLatency(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

export const STATE_LABELS: Record<TunnelState, string> = {
  connecting: "Connecting",
  up: "Up",
  checking: "Checking…",
  down: "Down",
  api_down: "API not answering",
  login_required: "Login required",
};

/** Whether a tunnel is open and not working (the window's and the tray's "failing"). */
export function isFailing(state: TunnelState): boolean {
  return state === "down" || state === "api_down" || state === "login_required";
}

/** What the cluster's API server said through the tunnel: "v1.31.4 · 42 ms", "42 ms" when it
 * would not tell its version, "—" while it does not answer (the same text as the CLI's and the
 * tray's). */
export function formatApi(t: Pick<TunnelStatus, "api_ms" | "kubernetes_version">): string {
  if (t.api_ms === null) return "—";
  const ms = formatLatency(t.api_ms);
  return t.kubernetes_version ? `${t.kubernetes_version} · ${ms}` : ms;
}

/** The state a row shows: its tunnel's, "connecting" while a connect is in flight, else off. */
export function rowState(row: ClusterRow, pending: boolean): TunnelState | "off" {
  if (row.tunnel) return row.tunnel.state;
  return pending ? "connecting" : "off";
}

export function stateLabel(s: TunnelState | "off"): string {
  return s === "off" ? "Off" : STATE_LABELS[s];
}

/** "14:03:07" for an RFC 3339 time today, else the date too; the raw text if unparsable. */
export function formatTime(rfc3339: string, now: Date = new Date()): string {
  const t = new Date(rfc3339);
  if (Number.isNaN(t.getTime())) return rfc3339;
  const pad = (n: number) => String(n).padStart(2, "0");
  const time = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  const sameDay =
    t.getFullYear() === now.getFullYear() &&
    t.getMonth() === now.getMonth() &&
    t.getDate() === now.getDate();
  return sameDay ? time : `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${time}`;
}

/**
 * The one line an error shows as. The shell rejects with `{code, message}`; anything else (a
 * bug, a missing bridge) still becomes text, never "[object Object]".
 */
export function errorMessage(e: unknown): string {
  if (isIpcError(e)) return e.message;
  if (e instanceof Error) return e.message || e.name;
  if (typeof e === "string") return e;
  return "Unexpected error (details in the app log)";
}

// ---------------------------------------------------------------------------------------------
// State

export interface DiscoveryState {
  running: boolean;
  /** The source being queried, while running. */
  source: string | null;
  done: number;
  total: number;
  /** Outcomes of the last finished refresh, null before the first one. */
  outcomes: SourceOutcome[] | null;
  /** Why `refresh_discovery` itself failed. */
  error: string | null;
}

export type LoginNotice = Events["login"];

/** A message over the page (it never moves the content). */
export interface Notice {
  text: string;
  error: boolean;
  /** Text the user may need to copy by hand, shown selectable. */
  code: string | null;
  /** Stays until dismissed. */
  sticky: boolean;
}

export interface UiState {
  rows: ClusterRow[];
  /** False until the first `clusters` answer. */
  loaded: boolean;
  /** Why loading the catalog failed. */
  loadError: string | null;
  /** Ids with a command in flight (connect, disconnect, favourite…). */
  pending: Record<string, true>;
  /** The last failed command per row, shown inline under it. */
  rowErrors: Record<string, string>;
  discovery: DiscoveryState;
  /** Newest last, at most `ACTIVITY_LIMIT`. */
  activity: Activity[];
  /** Login notices by Access application. */
  logins: Record<string, LoginNotice>;
  /** A short confirmation ("Copied …") or failure not tied to a row. */
  /** A passing message. `code` is text to copy by hand (selectable); a `sticky` notice stays
   *  until dismissed instead of fading. */
  notice: Notice | null;
  /** Counts the tunnel changes applied (events and connect's reply). A catalog answer is a
   *  snapshot taken some time after it was asked for; its requests run beside the tunnel
   *  commands, so it can be older than an event that came before it. */
  tunnelClock: number;
  /** Per row id, the `tunnelClock` of the last tunnel change applied to it. */
  tunnelChanged: Record<string, number>;
  /** The `tunnelClock` when the catalog was last asked for (`fetching`). */
  fetchedSince: number;
}

export const ACTIVITY_LIMIT = 200;

export const INITIAL_STATE: UiState = {
  rows: [],
  loaded: false,
  loadError: null,
  pending: {},
  rowErrors: {},
  discovery: { running: false, source: null, done: 0, total: 0, outcomes: null, error: null },
  activity: [],
  logins: {},
  notice: null,
  tunnelClock: 0,
  tunnelChanged: {},
  fetchedSince: 0,
};

export type Action =
  | { type: "fetching" }
  | { type: "clusters"; rows: ClusterRow[] }
  | { type: "load_failed"; message: string }
  | { type: "tunnel"; status: TunnelStatus }
  | { type: "connected"; status: TunnelStatus }
  | { type: "tunnel_closed"; cluster: string }
  | { type: "discovery"; event: Events["discovery"] }
  | { type: "discovery_started" }
  | { type: "discovery_failed"; message: string }
  | { type: "activity_list"; items: Activity[] }
  | { type: "activity"; item: Activity }
  | { type: "login"; event: Events["login"] }
  | { type: "pending"; id: string; pending: boolean }
  | { type: "row_error"; id: string; message: string | null }
  | { type: "favourite"; id: string; favourite: boolean }
  | { type: "notice"; text: string | null; error?: boolean; code?: string; sticky?: boolean };

function updateRow(
  rows: ClusterRow[],
  id: string,
  f: (r: ClusterRow) => ClusterRow,
): ClusterRow[] | null {
  const i = rows.findIndex((r) => r.id === id);
  if (i < 0) return null;
  const next = rows.slice();
  next[i] = f(rows[i]);
  return next;
}

/** Applies a tunnel change to row `id`, stamping it with the next `tunnelClock`. */
function setTunnel(s: UiState, id: string, tunnel: TunnelStatus | null): UiState | null {
  const rows = updateRow(s.rows, id, (r) => ({ ...r, tunnel }));
  if (!rows) return null;
  const tunnelClock = s.tunnelClock + 1;
  return { ...s, rows, tunnelClock, tunnelChanged: { ...s.tunnelChanged, [id]: tunnelClock } };
}

function without<T>(m: Record<string, T>, id: string): Record<string, T> {
  if (!(id in m)) return m;
  const { [id]: _, ...rest } = m;
  return rest;
}

/** Folds one command result or shell event into the window's state. */
export function reduce(s: UiState, a: Action): UiState {
  switch (a.type) {
    case "fetching":
      return { ...s, fetchedSince: s.tunnelClock };
    case "clusters": {
      // A row whose tunnel changed after the catalog was asked for keeps that newer tunnel: the
      // answer may have been taken before the change, and no event would bring it back.
      const current = new Map(s.rows.map((r) => [r.id, r]));
      const rows = a.rows.map((r) => {
        const mine = current.get(r.id);
        const newer = (s.tunnelChanged[r.id] ?? -1) > s.fetchedSince;
        return mine && newer ? { ...r, tunnel: mine.tunnel } : r;
      });
      return { ...s, rows, loaded: true, loadError: null };
    }
    case "load_failed":
      return { ...s, loaded: true, loadError: a.message };
    case "tunnel": {
      // `cluster` is the row's id. A tunnel for a row we don't know yet (the catalog is being
      // fetched) is picked up by that fetch, which carries each row's tunnel.
      const next = setTunnel(s, a.status.cluster, a.status);
      if (!next) return s;
      // Up means whatever failed before is over.
      const rowErrors = a.status.state === "up" ? without(s.rowErrors, a.status.cluster) : s.rowErrors;
      return { ...next, rowErrors };
    }
    case "connected": {
      // The `connect` command's reply is a snapshot taken when the tunnel opened. Its events
      // travel on another channel and may arrive first: a row that already has its tunnel has
      // newer news (e.g. up) that the snapshot (connecting) must not undo.
      const row = s.rows.find((r) => r.id === a.status.cluster);
      if (row?.tunnel) return s;
      return reduce(s, { type: "tunnel", status: a.status });
    }
    case "tunnel_closed":
      return setTunnel(s, a.cluster, null) ?? s;
    case "discovery_started":
      return {
        ...s,
        discovery: { ...s.discovery, running: true, source: null, done: 0, total: 0, error: null },
      };
    case "discovery": {
      const e = a.event;
      if (e.phase === "running") {
        return {
          ...s,
          discovery: { ...s.discovery, running: true, source: e.source, done: e.done, total: e.total },
        };
      }
      return {
        ...s,
        discovery: { ...s.discovery, running: false, source: null, outcomes: e.outcomes, error: null },
      };
    }
    case "discovery_failed":
      return { ...s, discovery: { ...s.discovery, running: false, source: null, error: a.message } };
    case "activity_list":
      return { ...s, activity: a.items.slice(-ACTIVITY_LIMIT) };
    case "activity": {
      const activity = [...s.activity, a.item];
      return { ...s, activity: activity.slice(-ACTIVITY_LIMIT) };
    }
    case "login":
      return { ...s, logins: { ...s.logins, [a.event.application]: a.event } };
    case "pending":
      return {
        ...s,
        pending: a.pending ? { ...s.pending, [a.id]: true } : without(s.pending, a.id),
      };
    case "row_error":
      return {
        ...s,
        rowErrors:
          a.message === null ? without(s.rowErrors, a.id) : { ...s.rowErrors, [a.id]: a.message },
      };
    case "favourite": {
      const rows = updateRow(s.rows, a.id, (r) => ({ ...r, favourite: a.favourite }));
      return rows ? { ...s, rows } : s;
    }
    case "notice":
      return {
        ...s,
        notice:
          a.text === null
            ? null
            : { text: a.text, error: a.error ?? false, code: a.code ?? null, sticky: a.sticky ?? false },
      };
  }
}

/** "3 tunnels up", "1 tunnel up, 1 failing", "No tunnels up". */
export function summary(rows: readonly ClusterRow[]): string {
  let up = 0;
  let failing = 0;
  for (const r of rows) {
    if (r.tunnel?.state === "up") up++;
    else if (r.tunnel && isFailing(r.tunnel.state)) failing++;
  }
  const head = up === 0 ? "No tunnels up" : `${up} tunnel${up === 1 ? "" : "s"} up`;
  return failing === 0 ? head : `${head}, ${failing} failing`;
}
