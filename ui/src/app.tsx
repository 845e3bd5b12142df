// The window: header (summary, search, filters, discovery refresh), the cluster list grouped by
// cloud → environment with favourites first, the activity log and the settings. State lives in
// one reducer (`model.ts`) fed by command results and shell events.
import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from "preact/hooks";
import type { AboutInfo, ClusterRow, Cloud, Ipc } from "./ipc";
import {
  CLOUD_LABELS,
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
  type Filters,
  type UiState,
} from "./model";
import { ActivityView, DiscoveryPanel, FirstRunBanners, LoginBanners, SettingsView } from "./views";

type View = "clusters" | "activity" | "settings";

/** A DOM id built from a cluster id (which may hold `/`, `:` or spaces). */
export function domId(prefix: string, id: string): string {
  return `${prefix}-${id.replace(/[^A-Za-z0-9_-]/g, (c) => `_${c.charCodeAt(0).toString(16)}`)}`;
}

/** What the rows can ask the window to do. */
interface RowActions {
  toggle(row: ClusterRow): void;
  star(row: ClusterRow): void;
  useContext(row: ClusterRow): void;
  copyCommand(row: ClusterRow): void;
}

export function App({ ipc }: { ipc: Ipc }) {
  const [state, dispatch] = useReducer<UiState, Action>(reduce, INITIAL_STATE);
  const [view, setView] = useState<View>("clusters");
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  // Where the app's files are and how it runs; null until known (or if the app cannot say).
  const [about, setAbout] = useState<AboutInfo | null>(null);
  const searchRef = useRef<HTMLInputElement>(null);
  // After a star moves a row between the favourites and its group, focus follows the row.
  const focusStarOf = useRef<string | null>(null);
  // Only the latest `clusters` answer may land: an older one would undo a newer change.
  const fetchSeq = useRef(0);

  const loadClusters = useCallback(async () => {
    const seq = ++fetchSeq.current;
    dispatch({ type: "fetching" });
    try {
      const rows = await ipc.call("clusters");
      if (seq === fetchSeq.current) dispatch({ type: "clusters", rows });
    } catch (e) {
      if (seq === fetchSeq.current) dispatch({ type: "load_failed", message: errorMessage(e) });
    }
  }, [ipc]);

  useEffect(() => {
    const unlisteners = [
      ipc.on("tunnel", (status) => dispatch({ type: "tunnel", status })),
      ipc.on("tunnel_closed", ({ cluster }) => dispatch({ type: "tunnel_closed", cluster })),
      ipc.on("clusters_changed", () => void loadClusters()),
      ipc.on("discovery", (event) => dispatch({ type: "discovery", event })),
      ipc.on("activity", (item) => dispatch({ type: "activity", item })),
      ipc.on("login", (event) => dispatch({ type: "login", event })),
    ];
    ipc.call("about").then(setAbout, () => setAbout(null));
    // Listen first, then fetch: nothing that happens in between is lost.
    void Promise.all(unlisteners).then(() => {
      void loadClusters();
      ipc.call("activity").then(
        (items) => dispatch({ type: "activity_list", items }),
        (e) => dispatch({ type: "notice", text: `Activity log: ${errorMessage(e)}`, error: true }),
      );
    });
    return () => {
      for (const u of unlisteners) void u.then((f) => f(), () => undefined);
    };
  }, [ipc, loadClusters]);

  // `/` focuses the search from anywhere but a text field.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
      const t = e.target as HTMLElement | null;
      if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
      e.preventDefault();
      if (searchRef.current) {
        searchRef.current.focus();
        return;
      }
      // The search box exists only in the clusters view: focus it once that has rendered.
      setView("clusters");
      requestAnimationFrame(() => searchRef.current?.focus());
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);

  // Notices fade after a while (a sticky one stays until dismissed); a newer one restarts the
  // clock.
  useEffect(() => {
    if (!state.notice || state.notice.sticky) return;
    const t = setTimeout(() => dispatch({ type: "notice", text: null }), 6000);
    return () => clearTimeout(t);
  }, [state.notice]);

  useEffect(() => {
    const id = focusStarOf.current;
    if (id === null) return;
    focusStarOf.current = null;
    document.getElementById(domId("star", id))?.focus();
  }, [state.rows]);

  const actions: RowActions = useMemo(
    () => ({
      async toggle(row) {
        dispatch({ type: "pending", id: row.id, pending: true });
        dispatch({ type: "row_error", id: row.id, message: null });
        try {
          if (row.tunnel === null) {
            const status = await ipc.call("connect", { id: row.id });
            dispatch({ type: "connected", status });
          } else {
            await ipc.call("disconnect", { id: row.id });
            dispatch({ type: "tunnel_closed", cluster: row.id });
          }
        } catch (e) {
          dispatch({ type: "row_error", id: row.id, message: errorMessage(e) });
        } finally {
          dispatch({ type: "pending", id: row.id, pending: false });
        }
      },
      async star(row) {
        const favourite = !row.favourite;
        focusStarOf.current = row.id;
        dispatch({ type: "favourite", id: row.id, favourite });
        try {
          await ipc.call("set_favourite", { id: row.id, favourite });
        } catch (e) {
          focusStarOf.current = row.id;
          dispatch({ type: "favourite", id: row.id, favourite: !favourite });
          dispatch({ type: "row_error", id: row.id, message: errorMessage(e) });
        }
      },
      async useContext(row) {
        try {
          const context = await ipc.call("use_context", { id: row.id });
          dispatch({ type: "notice", text: `kubectl now uses context ${context}` });
        } catch (e) {
          dispatch({ type: "row_error", id: row.id, message: errorMessage(e) });
        }
      },
      copyCommand(row) {
        const command = row.kubectl;
        // Written here, inside the click: WebKit lets a page write the clipboard only while it
        // handles the user's gesture, not after a round trip to the app.
        let written: Promise<void>;
        try {
          written = navigator.clipboard.writeText(command);
        } catch (e) {
          written = Promise.reject(e);
        }
        written.then(
          () => dispatch({ type: "notice", text: "Copied to the clipboard:", code: command }),
          () =>
            // No clipboard access in this webview: the command stays, selectable, until dismissed.
            dispatch({
              type: "notice",
              text: "This window cannot write the clipboard; copy the command by hand:",
              code: command,
              error: true,
              sticky: true,
            }),
        );
      },
    }),
    [ipc],
  );

  const refresh = useCallback(async () => {
    dispatch({ type: "discovery_started" });
    try {
      const outcomes = await ipc.call("refresh_discovery");
      dispatch({ type: "discovery", event: { phase: "finished", outcomes } });
    } catch (e) {
      dispatch({ type: "discovery_failed", message: errorMessage(e) });
    }
  }, [ipc]);

  return (
    <div class="app">
      <header class="bar">
        <h1 class="title">k8s-tunnels</h1>
        <p class="summary" aria-live="polite">
          {summary(state.rows)}
        </p>
        <nav class="views" aria-label="Views">
          {(["clusters", "activity", "settings"] as const).map((v) => (
            <button
              type="button"
              class="view-tab"
              aria-current={view === v ? "page" : undefined}
              onClick={() => setView(v)}
            >
              {v === "clusters" ? "Clusters" : v === "activity" ? "Activity" : "Settings"}
            </button>
          ))}
        </nav>
      </header>
      <div class="notice-area" role="status" aria-live="polite">
        {state.notice && (
          <p class={state.notice.error ? "notice notice-error" : "notice"}>
            <span class="notice-text">
              {state.notice.text}
              {state.notice.code !== null && <code class="notice-code">{state.notice.code}</code>}
            </span>
            <button
              type="button"
              class="link"
              aria-label="Dismiss message"
              onClick={() => dispatch({ type: "notice", text: null })}
            >
              ×
            </button>
          </p>
        )}
      </div>
      <LoginBanners logins={state.logins} />
      {about && <FirstRunBanners about={about} clusters={state.rows.length} />}
      {view === "clusters" && (
        <ClustersView
          state={state}
          filters={filters}
          setFilters={setFilters}
          searchRef={searchRef}
          actions={actions}
          refresh={refresh}
          retry={loadClusters}
          about={about}
        />
      )}
      {view === "activity" && <ActivityView activity={state.activity} />}
      {view === "settings" && <SettingsView ipc={ipc} about={about} />}
    </div>
  );
}

function ClustersView(props: {
  state: UiState;
  filters: Filters;
  setFilters: (f: Filters) => void;
  searchRef: { current: HTMLInputElement | null };
  actions: RowActions;
  refresh: () => void;
  retry: () => void;
  about: AboutInfo | null;
}) {
  const { state, filters, setFilters, actions } = props;
  const options = useMemo(() => filterOptions(state.rows), [state.rows]);
  const shown = useMemo(() => listing(filterRows(state.rows, filters)), [state.rows, filters]);
  const [collapsed, setCollapsed] = useState<ReadonlySet<string>>(new Set());
  const filtering = isFiltering(filters);
  const toggleGroup = (key: string) => {
    const next = new Set(collapsed);
    if (!next.delete(key)) next.add(key);
    setCollapsed(next);
  };
  // While filtering every group is open: a match must never hide in a collapsed group.
  const isOpen = (key: string) => filtering || !collapsed.has(key);
  const total = shown.favourites.length + shown.groups.reduce((n, g) => n + g.count, 0);

  return (
    <main class="clusters">
      <div class="toolbar" role="search">
        <label class="search">
          <span class="visually-hidden">Search clusters</span>
          <input
            ref={props.searchRef}
            id="search"
            type="search"
            placeholder="Search clusters  ( / )"
            autocomplete="off"
            spellcheck={false}
            value={filters.query}
            onInput={(e) => setFilters({ ...filters, query: e.currentTarget.value })}
            onKeyDown={(e) => {
              if (e.key === "Escape" && filters.query !== "") {
                e.preventDefault();
                setFilters({ ...filters, query: "" });
              }
            }}
          />
        </label>
        <Select
          label="Cloud"
          value={filters.cloud}
          options={options.clouds.map((c) => [c, CLOUD_LABELS[c]])}
          onChange={(v) => setFilters({ ...filters, cloud: v as Cloud | "" })}
        />
        <Select
          label="Environment"
          value={filters.environment}
          options={options.environments.map((e) => [e, e])}
          onChange={(v) => setFilters({ ...filters, environment: v })}
        />
        <Select
          label="Region"
          value={filters.region}
          options={options.regions.map((r) => [r, r])}
          onChange={(v) => setFilters({ ...filters, region: v })}
        />
        {filtering && (
          <button type="button" class="link" onClick={() => setFilters(NO_FILTERS)}>
            Clear filters
          </button>
        )}
      </div>
      <DiscoveryPanel
        discovery={state.discovery}
        refresh={props.refresh}
        about={props.about}
        listed={state.rows.length}
      />
      {!state.loaded && <p class="empty">Loading clusters…</p>}
      {state.loadError && (
        <p class="error-line" role="alert">
          Could not load the clusters: {state.loadError}{" "}
          <button type="button" class="link" onClick={props.retry}>
            Retry
          </button>
        </p>
      )}
      {state.loaded && !state.loadError && total === 0 && (
        <p class="empty">
          {state.rows.length === 0
            ? "No clusters yet. Configure a source in config.yaml, then refresh discovery."
            : "No cluster matches the search."}
        </p>
      )}
      {shown.favourites.length > 0 && (
        <Group
          id="group-favourites"
          title="Favourites"
          count={shown.favourites.length}
          level={2}
          open={isOpen("*favourites")}
          onToggle={() => toggleGroup("*favourites")}
        >
          <RowList label="Favourites" rows={shown.favourites} state={state} actions={actions} showGroup />
        </Group>
      )}
      {shown.groups.map((g) => (
        <Group
          id={domId("group", g.cloud)}
          title={CLOUD_LABELS[g.cloud]}
          count={g.count}
          level={2}
          open={isOpen(g.cloud)}
          onToggle={() => toggleGroup(g.cloud)}
        >
          {g.environments.map((e) => {
            const key = `${g.cloud}/${e.environment}`;
            return (
              <Group
                id={domId("group", key)}
                title={e.environment}
                count={e.rows.length}
                level={3}
                open={isOpen(key)}
                onToggle={() => toggleGroup(key)}
              >
                <RowList
                  label={`${CLOUD_LABELS[g.cloud]} ${e.environment}`}
                  rows={e.rows}
                  state={state}
                  actions={actions}
                />
              </Group>
            );
          })}
        </Group>
      ))}
    </main>
  );
}

function Select(props: {
  label: string;
  value: string;
  options: [string, string][];
  onChange: (v: string) => void;
}) {
  const id = `filter-${props.label.toLowerCase()}`;
  return (
    <div class="filter">
      <label class="filter-label" for={id}>
        {props.label}
      </label>
      <select id={id} value={props.value} onChange={(e) => props.onChange(e.currentTarget.value)}>
        <option value="">Any</option>
        {props.options.map(([v, text]) => (
          <option value={v}>{text}</option>
        ))}
      </select>
    </div>
  );
}

function Group(props: {
  id: string;
  title: string;
  count: number;
  level: 2 | 3;
  open: boolean;
  onToggle: () => void;
  children: preact.ComponentChildren;
}) {
  const Heading = props.level === 2 ? "h2" : "h3";
  const bodyId = `${props.id}-body`;
  const headingId = `${props.id}-heading`;
  return (
    <section class={`group group-${props.level}`} role="group" aria-labelledby={headingId}>
      <Heading class="group-heading" id={headingId}>
        <button
          type="button"
          class="group-toggle"
          aria-expanded={props.open}
          aria-controls={bodyId}
          onClick={props.onToggle}
        >
          <span class="chevron" aria-hidden="true">
            {props.open ? "▾" : "▸"}
          </span>
          <span class="group-title">{props.title}</span>
          <span class="count" aria-label={`${props.count} clusters`}>
            {props.count}
          </span>
        </button>
      </Heading>
      <div id={bodyId} class="group-body" hidden={!props.open}>
        {props.children}
      </div>
    </section>
  );
}

function RowList(props: {
  label: string;
  rows: ClusterRow[];
  state: UiState;
  actions: RowActions;
  showGroup?: boolean;
}) {
  return (
    <ul class="rows" aria-label={props.label}>
      {props.rows.map((r) => (
        <Row
          key={r.id}
          row={r}
          pending={r.id in props.state.pending}
          error={props.state.rowErrors[r.id] ?? null}
          actions={props.actions}
          showGroup={props.showGroup ?? false}
        />
      ))}
    </ul>
  );
}

function Row(props: {
  row: ClusterRow;
  pending: boolean;
  error: string | null;
  actions: RowActions;
  showGroup: boolean;
}) {
  const { row, actions } = props;
  const s = rowState(row, props.pending);
  const t = row.tunnel;
  const stateId = domId("state", row.id);
  const problem = t?.reason ?? null;
  const meta = [
    props.showGroup ? `${CLOUD_LABELS[row.cloud]} ${row.environment}` : null,
    row.region,
    row.context,
  ].filter((x): x is string => !!x);
  return (
    <li class={`row state-${s}`} data-id={row.id} data-state={s}>
      <button
        type="button"
        id={domId("star", row.id)}
        class="star"
        aria-pressed={row.favourite}
        aria-label={`Favourite ${row.name}`}
        title={row.favourite ? "Remove from favourites" : "Add to favourites"}
        onClick={() => actions.star(row)}
      >
        <span aria-hidden="true">{row.favourite ? "★" : "☆"}</span>
      </button>
      <div class="who">
        <span class="name" title={row.name}>
          {row.name}
        </span>
        {row.stale && (
          <span class="badge badge-stale" title={row.stale}>
            stale
          </span>
        )}
        <span class="meta">{meta.join(" · ")}</span>
      </div>
      <div class="state-cell">
        <span
          class={`state state-${s}`}
          id={stateId}
          title={t ? `${stateLabel(s)} since ${formatTime(t.since)}` : undefined}
        >
          {stateLabel(s)}
        </span>
        {t && <span class="port">127.0.0.1:{t.port}</span>}
      </div>
      {t ? (
        <dl class="figures">
          <div title={`${t.total_connections} connections since it opened, ${t.refused_connections} refused`}>
            <dt>Open</dt>
            <dd class="fig-open">{t.open_connections}</dd>
          </div>
          <div>
            <dt>Up</dt>
            <dd class="fig-up">{formatBytes(t.bytes_up)}</dd>
          </div>
          <div>
            <dt>Down</dt>
            <dd class="fig-down">{formatBytes(t.bytes_down)}</dd>
          </div>
          <div>
            <dt>Latency</dt>
            <dd class="fig-latency">{formatLatency(t.latency_ms)}</dd>
          </div>
          <div title="What the cluster's API server answered to /version through the tunnel">
            <dt>API</dt>
            <dd class="fig-api">{formatApi(t)}</dd>
          </div>
        </dl>
      ) : (
        <span class="figures figures-none" />
      )}
      <div class="actions">
        <button type="button" class="secondary" onClick={() => actions.useContext(row)}>
          Use context
        </button>
        <button
          type="button"
          class="secondary"
          aria-label={`Copy kubectl command for ${row.name}`}
          onClick={() => actions.copyCommand(row)}
        >
          Copy kubectl command
        </button>
      </div>
      <button
        type="button"
        role="switch"
        class="toggle"
        aria-checked={t !== null}
        aria-label={`Tunnel to ${row.name}`}
        aria-describedby={stateId}
        aria-busy={props.pending}
        // Not `disabled`: that would drop keyboard focus while the command runs.
        aria-disabled={props.pending}
        onClick={() => {
          if (!props.pending) actions.toggle(row);
        }}
      >
        <span class="knob" aria-hidden="true" />
      </button>
      {(problem || t?.last_error || props.error) && (
        <div class="problems">
          {problem && <p class="reason">{problem}</p>}
          {t?.last_error && <p class="last-error">Last error: {t.last_error}</p>}
          {props.error && (
            <p class="row-error" role="alert">
              {props.error}
            </p>
          )}
        </div>
      )}
    </li>
  );
}
