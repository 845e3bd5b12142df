import { defineConfig } from "vitest/config";

// The webview loads the build from the app bundle, so every URL is relative (`base: './'`), and
// its CSP forbids inline scripts: no module-preload polyfill (Vite would inline it otherwise).
export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    modulePreload: { polyfill: false },
    // Small enough that one chunk is simplest for the webview.
    assetsInlineLimit: 0,
  },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  test: {
    environment: "happy-dom",
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
  },
});
