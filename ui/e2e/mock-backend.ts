// A fake desktop shell for the end-to-end tests: installed by an init script before the window's
// own code runs, it answers every command of `Commands` through `@tauri-apps/api/mocks`' `mockIPC`,
// records each call, keeps its state in localStorage (so a reload sees a starred row still
// starred), and lets the test emit shell events through `window.__mock.emit`.
//
// Typed against `src/ipc.ts` (the types generated from Rust): a command or payload that drifts from
// the contract fails `tsc`.
import { emit } from "@tauri-apps/api/event";
import { mockIPC, mockWindows } from "@tauri-apps/api/mocks";
import type {
  AboutInfo,
  Activity,
  ClusterRow,
  Cloud,
  CommandName,
  Commands,
  EventName,
  Events,
  IpcError,
  Settings,
  SourceInfo,
  SourceOutcome,
  TunnelStatus,
} from "../src/ipc";

/** One recorded command. */
export interface Call {
  cmd: string;
  args: Record<string, unknown>;
}

interface MockState {
  rows: ClusterRow[];
  settings: Settings;
  activity: Activity[];
  nextPort: number;
  about: AboutInfo;
  calls: Call[];
  /** Errors the next call of a command rejects with (set by the test). */
  failNext: Partial<Record<CommandName, IpcError>>;
}

/** What the test reaches through `page.evaluate(() => window.__mock…)`. */
export interface MockControl {
  calls(): Call[];
  clearCalls(): void;
  emit<E extends EventName>(event: E, payload: Events[E]): Promise<void>;
  state(): MockState;
  /** Changes what `about` answers (seen by the window after a reload). */
  setAbout(patch: Partial<AboutInfo>): void;
  /** The next call of `cmd` rejects with `error`. */
  failNext(cmd: CommandName, error: IpcError): void;
  /** Makes `connect` answer `up` at once (the screenshot's demo-like catalog). */
  setAutoUp(on: boolean): void;
  /** A `tunnel` status for a row, for tests to tweak and emit. */
  status(id: string, patch?: Partial<TunnelStatus>): TunnelStatus;
}

declare global {
  interface Window {
    __mock: MockControl;
  }
}

const KEY = "k8s-tunnels-e2e-mock";
const AUTO_UP_KEY = "k8s-tunnels-e2e-auto-up";

function cluster(
  cloud: Cloud,
  environment: string,
  name: string,
  region: string | null,
  source: string,
): ClusterRow {
  const id = `${cloud}/${environment}/${name}`;
  return {
    id,
    name,
    cloud,
    environment,
    // As the library places them (k8s_tunnels::inventory::environment_rank).
    environment_order: ["prod", "staging", "test", "dev"].indexOf(environment) >>> 0,
    region,
    source,
    stale: null,
    favourite: false,
    context: `tun-${cloud}-${environment}-${name}`,
    kubectl: `kubectl --context 'tun-${cloud}-${environment}-${name}' get namespaces`,
    tunnel: null,
  };
}

/** About eight clusters across aws/gcp/onprem × prod/staging/dev, like the demo lab. */
export function catalog(): ClusterRow[] {
  return [
    cluster("aws", "prod", "payments", "eu-west-1", "eks"),
    cluster("aws", "prod", "checkout", "us-east-1", "eks"),
    cluster("aws", "staging", "payments-staging", "eu-west-1", "eks"),
    cluster("aws", "dev", "sandbox", "eu-central-1", "eks"),
    cluster("gcp", "prod", "analytics", "europe-west4", "gke"),
    cluster("gcp", "staging", "ml-training", "us-central1", "gke"),
    { ...cluster("gcp", "dev", "playground", "europe-west1", "gke"), stale: "gke: PermissionDenied on project dev-123" },
    cluster("onprem", "prod", "factory-floor", "dc-berlin", "vault"),
    cluster("onprem", "dev", "lab", null, "file"),
  ];
}

function initialState(): MockState {
  return {
    rows: catalog(),
    settings: {
      kubeconfig_prefix: "tun-",
      kubeconfig_path: null,
      switch_context_on_connect: false,
      notifications: true,
      start_at_login: false,
      reconnect_at_start: true,
    },
    activity: [
      { at: new Date(Date.now() - 60_000).toISOString(), level: "info", cluster: null, message: "Discovery found 9 clusters" },
    ],
    nextPort: 17001,
    // A first run on the demo lab, with a keychain.
    about: {
      version: "0.1.0",
      config_file: "/home/dev/.config/k8s-tunnels/config.yaml",
      config_exists: false,
      inventory_file: "/home/dev/.config/k8s-tunnels/inventory.yaml",
      kubeconfig_files: ["/home/dev/.kube/config"],
      demo_lab: true,
      keychain_unavailable: null,
    },
    calls: [],
    failNext: {},
  };
}

function load(): MockState {
  try {
    const raw = localStorage.getItem(KEY);
    if (raw) return JSON.parse(raw) as MockState;
  } catch {
    // A broken or missing store starts afresh.
  }
  return initialState();
}

const state = load();
const save = () => localStorage.setItem(KEY, JSON.stringify(state));
const autoUp = () => localStorage.getItem(AUTO_UP_KEY) === "1";

function fail(code: IpcError["code"], message: string): never {
  throw { code, message } satisfies IpcError;
}

function row(id: string): ClusterRow {
  return state.rows.find((r) => r.id === id) ?? fail("not_found", `no cluster with id ${id}`);
}

function statusFor(r: ClusterRow, patch: Partial<TunnelStatus> = {}): TunnelStatus {
  return {
    cluster: r.id,
    name: r.name,
    context: r.context,
    state: "connecting",
    reason: null,
    since: new Date().toISOString(),
    port: r.tunnel?.port ?? state.nextPort,
    open_connections: 0,
    total_connections: 0,
    refused_connections: 0,
    bytes_up: 0,
    bytes_down: 0,
    latency_ms: null,
    api_ms: null,
    kubernetes_version: null,
    last_error: null,
    ...patch,
  };
}

function log(level: Activity["level"], cluster: string | null, message: string): Activity {
  const a: Activity = { at: new Date().toISOString(), level, cluster, message };
  state.activity.push(a);
  return a;
}

type Handlers = {
  [C in CommandName]: (args: Commands[C][0]) => Commands[C][1] | Promise<Commands[C][1]>;
};

const handlers: Handlers = {
  clusters: () => state.rows,
  connect: ({ id }) => {
    const r = row(id);
    if (r.tunnel) return r.tunnel;
    const up = autoUp();
    r.tunnel = statusFor(r, up ? { state: "up", latency_ms: 23, api_ms: 31, kubernetes_version: "v1.32.0" } : {});
    state.nextPort++;
    void emit("activity", log("info", r.name, `Tunnel opened on 127.0.0.1:${r.tunnel.port}`));
    return r.tunnel;
  },
  disconnect: ({ id }) => {
    const r = row(id);
    r.tunnel = null;
    void emit("activity", log("info", r.name, "Tunnel closed"));
    return null;
  },
  disconnect_all: () => {
    for (const r of state.rows) r.tunnel = null;
    return null;
  },
  set_favourite: ({ id, favourite }) => {
    row(id).favourite = favourite;
    return null;
  },
  use_context: ({ id }) => row(id).context,
  kubectl_command: ({ id }) => `kubectl --context '${row(id).context}' get namespaces`,
  refresh_discovery: async () => {
    const sources = ["eks", "gke", "vault", "file"];
    for (let i = 0; i < sources.length; i++) {
      await emit("discovery", { phase: "running", source: sources[i], done: i, total: sources.length });
      await new Promise((r) => setTimeout(r, 150));
    }
    const outcomes: SourceOutcome[] = sources.map((source) => ({
      source,
      clusters: state.rows.filter((r) => r.source === source).length,
      errors: source === "gke" ? ["dev-123: PermissionDenied: caller lacks container.clusters.list"] : [],
      rejected: [],
    }));
    await emit("discovery", { phase: "finished", outcomes });
    return outcomes;
  },
  settings: () => state.settings,
  save_settings: ({ settings }) => {
    if (settings.kubeconfig_prefix.trim() === "") fail("invalid", "the context prefix must not be empty");
    state.settings = settings;
    return settings;
  },
  sources: (): SourceInfo[] => [
    { name: "eks", enabled: true, detail: "profiles prod, staging · regions eu-west-1, us-east-1, eu-central-1" },
    { name: "gke", enabled: true, detail: "projects analytics-prod, ml-staging, dev-123" },
    { name: "vault", enabled: true, detail: "https://vault.example.internal · kv/k8s-tunnels" },
    { name: "file", enabled: false, detail: "~/.config/k8s-tunnels/inventory.yaml" },
  ],
  about: () => state.about,
  activity: () => state.activity.slice(-200),
};

mockWindows("main");
mockIPC(
  async (cmd, payload) => {
    const args = (payload ?? {}) as Record<string, unknown>;
    state.calls.push({ cmd, args });
    try {
      const injected = state.failNext[cmd as CommandName];
      if (injected) {
        delete state.failNext[cmd as CommandName];
        throw injected;
      }
      const h = handlers[cmd as CommandName] as ((a: unknown) => unknown) | undefined;
      if (!h) fail("internal", `the mock shell has no command ${cmd}`);
      return await h(args);
    } finally {
      save();
    }
  },
  { shouldMockEvents: true },
);

window.__mock = {
  calls: () => state.calls,
  clearCalls: () => {
    state.calls = [];
    save();
  },
  emit: async (event, payload) => {
    // Keep the mock's own view in step, as the real shell's engine would be.
    if (event === "tunnel") {
      const t = payload as TunnelStatus;
      const r = state.rows.find((x) => x.id === t.cluster);
      if (r) r.tunnel = t;
    } else if (event === "tunnel_closed") {
      const r = state.rows.find((x) => x.id === (payload as Events["tunnel_closed"]).cluster);
      if (r) r.tunnel = null;
    }
    save();
    await emit(event, payload);
  },
  state: () => state,
  failNext: (cmd, error) => {
    state.failNext[cmd] = error;
    save();
  },
  setAbout: (patch) => {
    state.about = { ...state.about, ...patch };
    save();
  },
  setAutoUp: (on) => localStorage.setItem(AUTO_UP_KEY, on ? "1" : "0"),
  status: (id, patch) => statusFor(row(id), patch),
};
