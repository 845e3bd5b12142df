// The window rendered into happy-dom over `Ipc` built on `mockIPC`, as in the app: what a user
// sees after commands fail or events arrive.
import { afterEach, beforeEach, expect, test } from "vitest";
import { render } from "preact";
import { act } from "preact/test-utils";
import { clearMocks, mockIPC } from "@tauri-apps/api/mocks";
import { emit } from "@tauri-apps/api/event";
import type { ClusterRow, IpcError, TunnelStatus } from "./ipc";
import { App } from "./app";
import { tauriIpc } from "./tauri";

const ROWS: ClusterRow[] = [
  {
    id: "aws/prod/payments",
    name: "payments",
    cloud: "aws",
    environment: "prod",
    environment_order: 0,
    region: "eu-west-1",
    source: "eks",
    stale: null,
    favourite: false,
    context: "tun-payments",
    kubectl: "kubectl --context 'tun-payments' get namespaces",
    tunnel: null,
  },
];

let root: HTMLElement;
let calls: [string, unknown][];
let failures: Record<string, unknown>;

beforeEach(() => {
  root = document.createElement("div");
  document.body.append(root);
  calls = [];
  failures = {};
  mockIPC(
    (cmd, args) => {
      calls.push([cmd, args]);
      if (cmd in failures) return Promise.reject(failures[cmd]);
      if (cmd === "clusters") return structuredClone(ROWS);
      if (cmd === "activity") return [];
      return null;
    },
    { shouldMockEvents: true },
  );
});

afterEach(async () => {
  // Unmounting unlistens asynchronously: let that reach the mock before it goes.
  await act(() => render(null, root));
  await settle();
  root.remove();
  clearMocks();
});

/** Lets promises and Preact's re-render settle. */
async function settle() {
  for (let i = 0; i < 5; i++) await act(() => new Promise((r) => setTimeout(r, 0)));
}

async function mount() {
  await act(() => render(<App ipc={tauriIpc()} />, root));
  await settle();
}

const toggle = () => root.querySelector<HTMLButtonElement>('[role="switch"]')!;

test("a failed connect shows the error's message under the row, not the object", async () => {
  failures.connect = { code: "tunnel", message: "no free local port" } satisfies IpcError;
  await mount();
  await act(() => toggle().click());
  await settle();
  expect(calls).toContainEqual(["connect", { id: "aws/prod/payments" }]);
  const alert = root.querySelector('li.row [role="alert"]');
  expect(alert?.textContent).toBe("no free local port");
  expect(root.textContent).not.toContain("[object");
  expect(toggle().getAttribute("aria-checked")).toBe("false");
});

test("a rejection that is not {code, message} still shows as text", async () => {
  failures.clusters = { unexpected: true };
  await mount();
  expect(root.querySelector('[role="alert"]')?.textContent).toContain("Could not load the clusters: Unexpected error");
  expect(root.textContent).not.toContain("[object");
});

test("tunnel events update the row live", async () => {
  await mount();
  const row = () => root.querySelector("li.row")!;
  expect(row().getAttribute("data-state")).toBe("off");
  const status: TunnelStatus = {
    cluster: "aws/prod/payments",
    name: "payments",
    context: "tun-payments",
    state: "up",
    reason: null,
    since: "2025-01-01T00:00:00Z",
    port: 17042,
    open_connections: 1,
    total_connections: 1,
    refused_connections: 0,
    bytes_up: 2048,
    bytes_down: 0,
    latency_ms: 12,
    api_ms: 7,
    kubernetes_version: "v1.32.0",
    last_error: "EOF from origin",
  };
  await act(() => emit("tunnel", status));
  await settle();
  expect(row().getAttribute("data-state")).toBe("up");
  expect(row().querySelector(".port")?.textContent).toBe("127.0.0.1:17042");
  expect(row().querySelector(".fig-up")?.textContent).toBe("2 KiB");
  expect(row().querySelector(".fig-api")?.textContent).toBe("v1.32.0 · 7 ms");
  expect(row().querySelector(".last-error")?.textContent).toBe("Last error: EOF from origin");
  expect(toggle().getAttribute("aria-checked")).toBe("true");
  await act(() => emit("tunnel_closed", { cluster: "aws/prod/payments", name: "payments" }));
  await settle();
  expect(row().getAttribute("data-state")).toBe("off");
});

test("clusters_changed fetches the catalog again", async () => {
  await mount();
  const before = calls.filter(([c]) => c === "clusters").length;
  await act(() => emit("clusters_changed", {}));
  await settle();
  expect(calls.filter(([c]) => c === "clusters").length).toBe(before + 1);
});

test("a login-required event shows a banner", async () => {
  await mount();
  await act(() => emit("login", { kind: "required", application: "eu.example.com" }));
  await settle();
  expect(root.querySelector(".banner-error")?.textContent).toContain("Login required for eu.example.com");
});

test("a sign-in that could not open a browser shows its link", async () => {
  await mount();
  const url = "https://eu.example.com/cdn-cgi/access/cli?token=pubkey";
  await act(() =>
    emit("login", {
      kind: "sign_in",
      application: "eu.example.com",
      url,
      browser_opened: false,
      code: "AbCd-EfGh-IjKl-MnOp",
    }),
  );
  await settle();
  const banner = root.querySelector(".banner");
  expect(banner?.textContent).toContain("No browser could be opened");
  expect(banner?.textContent).toContain("the code AbCd-EfGh-IjKl-MnOp");
  expect(root.querySelector(".sign-in-url")?.textContent).toBe(url);
});
