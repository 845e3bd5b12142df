// Entry point: the window over the desktop shell's IPC.
import { render } from "preact";
import { App } from "./app";
import { tauriIpc } from "./tauri";
import "./style.css";

render(<App ipc={tauriIpc()} />, document.getElementById("app")!);
