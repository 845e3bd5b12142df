import { afterEach, expect, test } from "vitest";
import { clearMocks, mockIPC } from "@tauri-apps/api/mocks";
import { emit } from "@tauri-apps/api/event";
import { isIpcError, type TunnelStatus } from "./ipc";
import { tauriIpc } from "./tauri";

afterEach(() => clearMocks());

test("commands go through invoke with their named arguments", async () => {
  const calls: [string, unknown][] = [];
  mockIPC((cmd, args) => {
    calls.push([cmd, args]);
    return cmd === "kubectl_command" ? "kubectl --context 'a' get namespaces" : null;
  });
  const ipc = tauriIpc();
  await ipc.call("set_favourite", { id: "aws/prod/a", favourite: true });
  expect(await ipc.call("kubectl_command", { id: "aws/prod/a" })).toBe(
    "kubectl --context 'a' get namespaces",
  );
  expect(calls).toEqual([
    ["set_favourite", { id: "aws/prod/a", favourite: true }],
    ["kubectl_command", { id: "aws/prod/a" }],
  ]);
});

test("a rejected command carries the shell's {code, message}", async () => {
  mockIPC(() => Promise.reject({ code: "not_found", message: "no cluster x" }));
  const err = await tauriIpc().call("connect", { id: "x" }).catch((e: unknown) => e);
  expect(isIpcError(err)).toBe(true);
  expect(err).toEqual({ code: "not_found", message: "no cluster x" });
});

test("events reach an `on` handler as their payload", async () => {
  mockIPC(() => null, { shouldMockEvents: true });
  const seen: TunnelStatus[] = [];
  const unlisten = await tauriIpc().on("tunnel", (t) => seen.push(t));
  const status = { cluster: "c", state: "up", port: 1080 } as TunnelStatus;
  await emit("tunnel", status);
  expect(seen).toEqual([status]);
  unlisten();
  await emit("tunnel", status);
  expect(seen).toHaveLength(1);
});
