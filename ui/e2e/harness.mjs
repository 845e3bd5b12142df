// @ts-check
// What the end-to-end tests stand on: the built window (`dist/`) served from loopback with the
// webview's strict CSP, the mock shell (`mock-backend.ts`) bundled into one init script, and
// Debian's headless Chromium driven by playwright-core (no browser download).
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { extname, join, normalize, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { build } from "vite";
import { chromium } from "playwright-core";

export const UI_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(UI_DIR, "dist");

/** The CSP the desktop shell gives the webview: no inline script, no eval. */
export const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self' ipc: http://ipc.localhost; object-src 'none'; base-uri 'none'";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

/**
 * Serves `dist/` on 127.0.0.1 at a port the OS picks. Fails loudly when there is no build.
 * @returns {Promise<{ url: string, close: () => Promise<void> }>}
 */
export async function serveDist() {
  await stat(join(DIST, "index.html")).catch(() => {
    throw new Error(`no build in ${DIST}: run \`npm run build\` first`);
  });
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    const file = normalize(join(DIST, path === "/" ? "index.html" : path));
    if (!file.startsWith(DIST)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, {
        "content-type": TYPES[/** @type {keyof typeof TYPES} */ (extname(file))] ?? "application/octet-stream",
        "content-security-policy": CSP,
        "cache-control": "no-store",
      });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(undefined)));
  const addr = server.address();
  if (!addr || typeof addr === "string") throw new Error("no server address");
  return {
    url: `http://127.0.0.1:${addr.port}/`,
    close: () => new Promise((ok) => server.close(() => ok(undefined))),
  };
}

/** Bundles `mock-backend.ts` (and the `@tauri-apps/api` mocks it uses) into one script. */
export async function mockScript() {
  const out = await build({
    configFile: false,
    logLevel: "warn",
    root: UI_DIR,
    build: {
      write: false,
      // Never near dist/: nothing is written, and nothing must be emptied either.
      outDir: join(tmpdir(), "k8s-tunnels-e2e-mock"),
      emptyOutDir: false,
      minify: false,
      lib: {
        entry: join(UI_DIR, "e2e", "mock-backend.ts"),
        formats: ["iife"],
        name: "k8sTunnelsMock",
        fileName: () => "mock.js",
      },
    },
  });
  const outputs = Array.isArray(out) ? out : [out];
  for (const o of outputs) {
    if ("output" in o) {
      const chunk = o.output.find((c) => c.type === "chunk");
      if (chunk && chunk.type === "chunk") return chunk.code;
    }
  }
  throw new Error("the mock backend did not bundle");
}

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Debian's Chromium, headless. Fails loudly when it is not installed. */
export async function launch() {
  await stat(CHROMIUM).catch(() => {
    throw new Error(`${CHROMIUM} not found: apt-get install -y chromium`);
  });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
