import { render } from "preact";
import { tauriIpc } from "./tauri";

const ipc = tauriIpc();
function Main() {
  return <main><h1>k8s-tunnels</h1></main>;
}
void ipc;
render(<Main />, document.getElementById("app")!);
