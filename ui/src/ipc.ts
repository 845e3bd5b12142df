// The UI's side of the desktop shell's IPC. The types, the `Commands` and `Events` tables and
// their name lists are generated from the Rust declarations (`./generated/ipc.ts`, from
// `desktop/src/ipc/commands.rs` and `desktop/src/events.rs`; a Rust test fails while that file
// is out of date); what is written here is only the typed call and listen glue over them.
import type { CommandName, Commands, EventName, Events, IpcError } from "./generated/ipc";

export * from "./generated/ipc";

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
