import { describe, expect, test } from "vitest";
import type { ClusterRow, Cloud, TunnelStatus } from "./ipc";
import {
  INITIAL_STATE,
  NO_FILTERS,
  errorMessage,
  filterOptions,
  filterRows,
  formatBytes,
  formatApi,
  formatLatency,
  formatTime,
  isFiltering,
  listing,
  reduce,
  rowState,
  stateLabel,
  summary,
  type Action,
  type UiState,
} from "./model";

/** The places the library would give these environments (k8s_tunnels::inventory). */
const ENVIRONMENT_ORDER: Record<string, number> = { prod: 0, staging: 1, dev: 2, canary: 3, "qa-2": 4 };

function row(cloud: Cloud, environment: string, name: string, extra: Partial<ClusterRow> = {}): ClusterRow {
  return {
    id: `${cloud}/${environment}/${name}`,
    name,
    cloud,
    environment,
    environment_order: ENVIRONMENT_ORDER[environment] ?? 99,
    region: null,
    source: "file",
    stale: null,
    favourite: false,
    context: `tun-${name}`,
    kubectl: `kubectl --context 'tun-${name}' get namespaces`,
    tunnel: null,
    ...extra,
  };
}

function status(cluster: string, extra: Partial<TunnelStatus> = {}): TunnelStatus {
  return {
    cluster,
    name: cluster,
    context: `tun-${cluster}`,
    state: "up",
    reason: null,
    since: "2025-01-01T00:00:00Z",
    port: 17001,
    open_connections: 0,
    total_connections: 0,
    refused_connections: 0,
    bytes_up: 0,
    bytes_down: 0,
    latency_ms: null,
    api_ms: null,
    kubernetes_version: null,
    last_error: null,
    ...extra,
  };
}

const ROWS = [
  row("onprem", "dev", "lab"),
  row("aws", "prod", "payments", { region: "eu-west-1" }),
  row("aws", "staging", "payments-staging", { region: "eu-west-1" }),
  row("aws", "dev", "sandbox", { region: "eu-central-1" }),
  row("gcp", "prod", "analytics", { region: "europe-west4" }),
  row("aws", "prod", "checkout", { region: "us-east-1", favourite: true }),
  row("aws", "qa-2", "qa", { region: "us-east-1" }),
  row("aws", "canary", "canary", { region: "us-east-1" }),
];

const names = (rows: ClusterRow[]) => rows.map((r) => r.name);

describe("filtering", () => {
  test("no filters pass everything", () => {
    expect(filterRows(ROWS, NO_FILTERS)).toHaveLength(ROWS.length);
    expect(isFiltering(NO_FILTERS)).toBe(false);
    expect(isFiltering({ ...NO_FILTERS, query: "   " })).toBe(false);
  });

  test("the search matches words anywhere in name, context, region and environment, any case", () => {
    expect(names(filterRows(ROWS, { ...NO_FILTERS, query: "PAY" }))).toEqual(["payments", "payments-staging"]);
    expect(names(filterRows(ROWS, { ...NO_FILTERS, query: "pay staging" }))).toEqual(["payments-staging"]);
    expect(names(filterRows(ROWS, { ...NO_FILTERS, query: "eu-central" }))).toEqual(["sandbox"]);
    expect(names(filterRows(ROWS, { ...NO_FILTERS, query: "tun-lab" }))).toEqual(["lab"]);
    expect(filterRows(ROWS, { ...NO_FILTERS, query: "nothing-like-this" })).toEqual([]);
  });

  test("cloud, environment and region filters combine with the search", () => {
    expect(names(filterRows(ROWS, { ...NO_FILTERS, cloud: "gcp" }))).toEqual(["analytics"]);
    expect(names(filterRows(ROWS, { ...NO_FILTERS, cloud: "aws", environment: "prod" }))).toEqual([
      "payments",
      "checkout",
    ]);
    expect(names(filterRows(ROWS, { ...NO_FILTERS, region: "eu-west-1", query: "staging" }))).toEqual([
      "payments-staging",
    ]);
    // A row without a region never matches a region filter.
    expect(names(filterRows(ROWS, { ...NO_FILTERS, region: "dc-1" }))).toEqual([]);
  });

  test("the filter selects offer the values present, in list order", () => {
    const o = filterOptions(ROWS);
    expect(o.clouds).toEqual(["aws", "gcp", "onprem"]);
    expect(o.environments).toEqual(["prod", "staging", "dev", "canary", "qa-2"]);
    expect(o.regions).toEqual(["eu-central-1", "eu-west-1", "europe-west4", "us-east-1"]);
  });
});

describe("grouping and sorting", () => {
  test("favourites first, once; then cloud → environment (prod, staging, dev, others), names sorted", () => {
    const l = listing(ROWS);
    expect(names(l.favourites)).toEqual(["checkout"]);
    expect(l.groups.map((g) => g.cloud)).toEqual(["aws", "gcp", "onprem"]);
    const aws = l.groups[0];
    expect(aws.environments.map((e) => e.environment)).toEqual(["prod", "staging", "dev", "canary", "qa-2"]);
    expect(names(aws.environments[0].rows)).toEqual(["payments"]);
    expect(aws.count).toBe(5);
    expect(l.groups.flatMap((g) => g.environments.flatMap((e) => names(e.rows)))).not.toContain("checkout");
  });

  test("environments go where the library puts them, not by their names", () => {
    const rows = [
      row("aws", "prod", "a", { environment_order: 2 }),
      row("aws", "zeta", "b", { environment_order: 0 }),
      row("aws", "alpha", "c", { environment_order: 1 }),
    ];
    expect(listing(rows).groups[0].environments.map((e) => e.environment)).toEqual(["zeta", "alpha", "prod"]);
    expect(filterOptions(rows).environments).toEqual(["zeta", "alpha", "prod"]);
  });

  test("favourites sort by name; a starred row leaves its group and an emptied group disappears", () => {
    const rows = ROWS.map((r) => (r.name === "analytics" || r.name === "lab" ? { ...r, favourite: true } : r));
    const l = listing(rows);
    expect(names(l.favourites)).toEqual(["analytics", "checkout", "lab"]);
    expect(l.groups.map((g) => g.cloud)).toEqual(["aws"]);
  });

  test("nothing in, nothing out", () => {
    expect(listing([])).toEqual({ favourites: [], groups: [] });
  });
});

describe("formatting", () => {
  test.each([
    [0, "0 B"],
    [512, "512 B"],
    [1023, "1023 B"],
    [1024, "1 KiB"],
    [1536, "1.5 KiB"],
    [10 * 1024, "10 KiB"],
    [1024 * 1024 - 1, "1 MiB"],
    [3 * 1024 * 1024, "3 MiB"],
    [4_812_000, "4.6 MiB"],
    [5 * 1024 ** 4, "5 TiB"],
    [-1, "—"],
    [Number.NaN, "—"],
  ])("formatBytes(%d) = %s", (n, s) => {
    expect(formatBytes(n)).toBe(s);
  });

  test.each([
    [null, "—"],
    [0.4, "<1 ms"],
    [41.6, "42 ms"],
    [999, "999 ms"],
    [1234, "1.2 s"],
    [12_345, "12 s"],
  ])("formatLatency(%s) = %s", (ms, s) => {
    expect(formatLatency(ms)).toBe(s);
  });

  test("states read as words; off when no tunnel, connecting while a connect runs", () => {
    const r = row("aws", "prod", "x");
    expect(stateLabel(rowState(r, false))).toBe("Off");
    expect(stateLabel(rowState(r, true))).toBe("Connecting");
    const t = { ...r, tunnel: status(r.id, { state: "login_required" }) };
    expect(stateLabel(rowState(t, true))).toBe("Login required");
  });

  test("times: only the clock today, the date otherwise, raw text if unparsable", () => {
    const now = new Date(2025, 4, 6, 12, 0, 0);
    expect(formatTime(new Date(2025, 4, 6, 9, 5, 7).toISOString(), now)).toBe("09:05:07");
    expect(formatTime(new Date(2025, 4, 5, 23, 0, 0).toISOString(), now)).toBe("2025-05-05 23:00:00");
    expect(formatTime("not a time", now)).toBe("not a time");
  });

  test("summary counts up and failing tunnels", () => {
    expect(summary([])).toBe("No tunnels up");
    const up = (n: string) => ({ ...row("aws", "prod", n), tunnel: status(n) });
    expect(summary([up("a")])).toBe("1 tunnel up");
    expect(
      summary([up("a"), up("b"), { ...row("aws", "prod", "c"), tunnel: status("c", { state: "down" }) }]),
    ).toBe("2 tunnels up, 1 failing");
    expect(summary([up("a"), { ...row("aws", "prod", "c"), tunnel: status("c", { state: "api_down" }) }])).toBe(
      "1 tunnel up, 1 failing",
    );
  });

  test("the API figure says version and round trip, as the CLI and the tray do", () => {
    expect(formatApi({ api_ms: 42, kubernetes_version: "v1.31.4" })).toBe("v1.31.4 · 42 ms");
    expect(formatApi({ api_ms: 42, kubernetes_version: null })).toBe("42 ms");
    expect(formatApi({ api_ms: null, kubernetes_version: "v1.31.4" })).toBe("—");
    expect(stateLabel("api_down")).toBe("API not answering");
  });
});

describe("error display", () => {
  test("the shell's {code, message} shows as its message", () => {
    expect(errorMessage({ code: "tunnel", message: "no free local port" })).toBe("no free local port");
  });
  test("anything else still becomes one line of text, never [object Object]", () => {
    expect(errorMessage(new Error("boom"))).toBe("boom");
    expect(errorMessage("plain text")).toBe("plain text");
    for (const odd of [{}, { code: "x" }, { message: 42 }, null, undefined, 7]) {
      const text = errorMessage(odd);
      expect(text).not.toContain("[object");
      expect(text.length).toBeGreaterThan(0);
    }
  });
});

describe("state reducer", () => {
  const run = (actions: Action[], from: UiState = INITIAL_STATE) => actions.reduce(reduce, from);
  const loaded = run([{ type: "clusters", rows: ROWS }]);
  const find = (s: UiState, name: string) => s.rows.find((r) => r.name === name)!;

  test("the catalog loads; a load failure is kept as text", () => {
    expect(loaded.loaded).toBe(true);
    expect(loaded.rows).toHaveLength(ROWS.length);
    const failed = run([{ type: "load_failed", message: "engine not ready" }]);
    expect(failed).toMatchObject({ loaded: true, loadError: "engine not ready" });
    expect(run([{ type: "clusters", rows: ROWS }], failed).loadError).toBeNull();
  });

  test("a tunnel event updates its row only; tunnel_closed clears it", () => {
    const id = "gcp/prod/analytics";
    const s = run([{ type: "tunnel", status: status(id, { port: 17555, bytes_down: 10 }) }], loaded);
    expect(find(s, "analytics").tunnel).toMatchObject({ state: "up", port: 17555, bytes_down: 10 });
    expect(s.rows.filter((r) => r.tunnel !== null)).toHaveLength(1);
    // Rows the event doesn't touch keep their identity (Preact skips them).
    expect(find(s, "lab")).toBe(find(loaded, "lab"));
    const closed = run([{ type: "tunnel_closed", cluster: id }], s);
    expect(find(closed, "analytics").tunnel).toBeNull();
  });

  test("connect's reply does not undo a state its events already brought", () => {
    const id = "gcp/prod/analytics";
    // The reply first: the row shows connecting, then the event brings it up.
    const connecting = status(id, { state: "connecting" });
    const replyFirst = run([{ type: "connected", status: connecting }, { type: "tunnel", status: status(id) }], loaded);
    expect(find(replyFirst, "analytics").tunnel?.state).toBe("up");
    // The event first: the older reply is ignored.
    const eventFirst = run([{ type: "tunnel", status: status(id) }, { type: "connected", status: connecting }], loaded);
    expect(find(eventFirst, "analytics").tunnel?.state).toBe("up");
  });

  test("a catalog answer older than a tunnel event does not undo it", () => {
    const id = "gcp/prod/analytics";
    // Asked for (a star changed the catalog), then the tunnel came up, then the answer taken
    // before it arrived: the row stays up; rows without news take the answer's state.
    const answer = ROWS.map((r) =>
      r.name === "lab" ? { ...r, tunnel: status("onprem/dev/lab", { state: "down" }) } : r,
    );
    const s = run(
      [{ type: "fetching" }, { type: "tunnel", status: status(id) }, { type: "clusters", rows: answer }],
      loaded,
    );
    expect(find(s, "analytics").tunnel?.state).toBe("up");
    expect(find(s, "lab").tunnel?.state).toBe("down");
    // Closed after the ask: stays closed even though the answer still has it.
    const open = run([{ type: "tunnel", status: status(id) }], loaded);
    const withTunnel = ROWS.map((r) => (r.id === id ? { ...r, tunnel: status(id) } : r));
    const closed = run(
      [{ type: "fetching" }, { type: "tunnel_closed", cluster: id }, { type: "clusters", rows: withTunnel }],
      open,
    );
    expect(find(closed, "analytics").tunnel).toBeNull();
    // A change before the ask is what the answer already knows: the answer wins.
    const later = run([{ type: "fetching" }, { type: "clusters", rows: ROWS }], open);
    expect(find(later, "analytics").tunnel).toBeNull();
  });

  test("an event for an unknown cluster changes nothing", () => {
    expect(run([{ type: "tunnel", status: status("nope") }], loaded)).toBe(loaded);
    expect(run([{ type: "tunnel_closed", cluster: "nope" }], loaded)).toBe(loaded);
  });

  test("a row error stays until cleared or the tunnel comes up", () => {
    const id = "aws/prod/payments";
    const s = run([{ type: "row_error", id, message: "no free port" }], loaded);
    expect(s.rowErrors[id]).toBe("no free port");
    expect(run([{ type: "tunnel", status: status(id, { state: "down" }) }], s).rowErrors[id]).toBe("no free port");
    expect(run([{ type: "tunnel", status: status(id, { state: "up" }) }], s).rowErrors[id]).toBeUndefined();
    expect(run([{ type: "row_error", id, message: null }], s).rowErrors).toEqual({});
  });

  test("pending marks and unmarks a row", () => {
    const s = run([{ type: "pending", id: "a", pending: true }], loaded);
    expect(s.pending).toEqual({ a: true });
    expect(run([{ type: "pending", id: "a", pending: false }], s).pending).toEqual({});
  });

  test("favourite flips the row (optimistic star)", () => {
    const s = run([{ type: "favourite", id: "onprem/dev/lab", favourite: true }], loaded);
    expect(find(s, "lab").favourite).toBe(true);
    expect(names(listing(s.rows).favourites)).toEqual(["checkout", "lab"]);
  });

  test("discovery: started, running with progress, finished with outcomes; or failed", () => {
    let s = run([{ type: "discovery_started" }], loaded);
    expect(s.discovery).toMatchObject({ running: true, done: 0, total: 0 });
    s = run([{ type: "discovery", event: { phase: "running", source: "eks", done: 1, total: 3 } }], s);
    expect(s.discovery).toMatchObject({ running: true, source: "eks", done: 1, total: 3 });
    const outcomes = [{ source: "eks", clusters: 4, errors: ["eu-west-1: AccessDenied"], rejected: [] }];
    s = run([{ type: "discovery", event: { phase: "finished", outcomes } }], s);
    expect(s.discovery).toMatchObject({ running: false, source: null, outcomes, error: null });
    const failed = run([{ type: "discovery_started" }, { type: "discovery_failed", message: "busy" }], s);
    expect(failed.discovery).toMatchObject({ running: false, error: "busy", outcomes });
  });

  test("activity keeps the newest 200, newest last", () => {
    const item = (i: number) => ({ at: "2025-01-01T00:00:00Z", level: "info" as const, cluster: null, message: `m${i}` });
    let s = run([{ type: "activity_list", items: Array.from({ length: 199 }, (_, i) => item(i)) }], loaded);
    s = run([{ type: "activity", item: item(199) }, { type: "activity", item: item(200) }], s);
    expect(s.activity).toHaveLength(200);
    expect(s.activity[0].message).toBe("m1");
    expect(s.activity[199].message).toBe("m200");
  });

  test("login notices are kept per application, the latest wins", () => {
    const s = run(
      [
        { type: "login", event: { kind: "expiring", application: "eu", seconds_left: 300 } },
        { type: "login", event: { kind: "required", application: "eu" } },
        { type: "login", event: { kind: "expiring", application: "us", seconds_left: 60 } },
      ],
      loaded,
    );
    expect(s.logins).toEqual({
      eu: { kind: "required", application: "eu" },
      us: { kind: "expiring", application: "us", seconds_left: 60 },
    });
  });

  test("notices set and clear", () => {
    const s = run([{ type: "notice", text: "Copied", error: false }], loaded);
    expect(s.notice).toEqual({ text: "Copied", error: false, code: null, sticky: false });
    const sticky = run([{ type: "notice", text: "Copy by hand:", code: "kubectl", error: true, sticky: true }], loaded);
    expect(sticky.notice).toEqual({ text: "Copy by hand:", error: true, code: "kubectl", sticky: true });
    expect(run([{ type: "notice", text: null }], s).notice).toBeNull();
  });
});
