// The app's `Ipc`: `ipc.ts`'s typed class over `@tauri-apps/api`'s `invoke` and `listen`. Kept in
// its own module so tests build an `Ipc` over mocks without touching the real bridge.
import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import { Ipc } from "./ipc";

/** The `Ipc` the window uses inside the desktop shell (or under `mockIPC` in the e2e tests). */
export function tauriIpc(): Ipc {
  return new Ipc(
    (cmd, args) => invoke(cmd, args),
    (event, handler) => listen(event, handler),
  );
}
