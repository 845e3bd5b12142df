// @ts-check
// The window end to end: the production build in headless Chromium under the webview's CSP, with
// the shell replaced by `mock-backend.ts` through `@tauri-apps/api/mocks`. Run: `npm run e2e`
// (after `npm run build`). UI_SCREENSHOT=1 also writes docs/screenshot-window.png.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { launch, mockScript, serveDist, UI_DIR } from "./harness.mjs";

/** @typedef {import("playwright-core").Page} Page */
/** @typedef {import("playwright-core").Browser} Browser */

/** @type {Browser} */
let browser;
/** @type {{ url: string, close: () => Promise<void> }} */
let server;
/** @type {string} */
let mock;

before(async () => {
  [server, mock] = await Promise.all([serveDist(), mockScript()]);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/**
 * A fresh browser context (empty localStorage, so a fresh mock shell) with the window loaded.
 * Console errors (a CSP violation, an uncaught exception) are collected for `clean`.
 * @param {{ colorScheme?: "light" | "dark", viewport?: { width: number, height: number } }} [opts]
 */
async function openWindow(opts = {}) {
  const context = await browser.newContext({
    colorScheme: opts.colorScheme ?? "light",
    viewport: opts.viewport ?? { width: 1200, height: 800 },
  });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  await context.addInitScript({ content: mock });
  const page = await context.newPage();
  /** @type {string[]} */
  const errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(server.url);
  await page.locator("li.row").first().waitFor();
  return { page, errors, close: () => context.close() };
}

/** @param {Page} page @param {string} id */
const row = (page, id) => page.locator(`li.row[data-id="${id}"]`);

/** @param {Page} page @returns {Promise<{ cmd: string, args: Record<string, unknown> }[]>} */
const calls = (page) => page.evaluate(() => window.__mock.calls());

/** @param {string[]} errors */
function clean(errors) {
  assert.deepEqual(errors, [], "no console errors (CSP violations, exceptions)");
}

test("lists the catalog grouped by cloud, then environment, under the strict CSP", async () => {
  const { page, errors, close } = await openWindow();
  try {
    assert.equal(await page.locator("li.row").count(), 9);
    const clouds = await page.locator(".group-2 > .group-heading .group-title").allTextContents();
    assert.deepEqual(clouds, ["AWS", "Google Cloud", "On-premises"]);
    const awsEnvs = await page
      .locator('section[aria-labelledby="group-aws-heading"] .group-3 .group-title')
      .allTextContents();
    assert.deepEqual(awsEnvs, ["prod", "staging", "dev"]);
    // Collapsing a group hides its rows and says so to assistive technology.
    const awsToggle = page.getByRole("button", { name: /^AWS/ });
    await awsToggle.click();
    assert.equal(await awsToggle.getAttribute("aria-expanded"), "false");
    assert.equal(await row(page, "aws/prod/payments").isVisible(), false);
    await awsToggle.click();
    assert.equal(await row(page, "aws/prod/payments").isVisible(), true);
    clean(errors);
  } finally {
    await close();
  }
});

test("a click on a toggle calls connect with the row's id; a tunnel event brings the row up", async () => {
  const { page, errors, close } = await openWindow();
  try {
    const id = "gcp/prod/analytics";
    const toggle = page.getByRole("switch", { name: "Tunnel to analytics" });
    assert.equal(await toggle.getAttribute("aria-checked"), "false");
    await toggle.click();
    await row(page, id).and(page.locator('[data-state="connecting"]')).waitFor();
    assert.deepEqual(
      (await calls(page)).filter((c) => c.cmd === "connect"),
      [{ cmd: "connect", args: { id } }],
    );
    assert.equal(await toggle.getAttribute("aria-checked"), "true");

    await page.evaluate((id) => {
      const m = window.__mock;
      return m.emit("tunnel", m.status(id, { state: "up", port: 17555, open_connections: 2, bytes_up: 1536, bytes_down: 3 * 1024 * 1024, latency_ms: 41.6, api_ms: 7, kubernetes_version: "v1.32.0" }));
    }, id);
    const r = row(page, id);
    await r.and(page.locator('[data-state="up"]')).waitFor();
    assert.equal(await r.locator(".state").innerText(), "Up");
    assert.equal(await r.locator(".port").innerText(), "127.0.0.1:17555");
    assert.equal(await r.locator(".fig-open").innerText(), "2");
    assert.equal(await r.locator(".fig-up").innerText(), "1.5 KiB");
    assert.equal(await r.locator(".fig-down").innerText(), "3 MiB");
    assert.equal(await r.locator(".fig-latency").innerText(), "42 ms");
    assert.equal(await r.locator(".fig-api").innerText(), "v1.32.0 · 7 ms");
    assert.match(await page.locator(".summary").innerText(), /1 tunnel up/);

    // The edge is up and the cluster's API server is not: its own state, with the reason.
    await page.evaluate((id) => {
      const m = window.__mock;
      return m.emit("tunnel", m.status(id, { state: "api_down", port: 17555, latency_ms: 3, reason: "edge refused the tunnel with HTTP 502" }));
    }, id);
    await r.and(page.locator('[data-state="api_down"]')).waitFor();
    assert.equal(await r.locator(".state").innerText(), "API not answering");
    assert.equal(await r.locator(".fig-api").innerText(), "—");
    assert.equal(await r.locator(".reason").innerText(), "edge refused the tunnel with HTTP 502");
    assert.match(await page.locator(".summary").innerText(), /1 failing/);

    // The tunnel drops: the reason shows; then it is closed from the shell (the tray).
    await page.evaluate((id) => {
      const m = window.__mock;
      return m.emit("tunnel", m.status(id, { state: "down", port: 17555, reason: "edge unreachable: connection refused" }));
    }, id);
    await r.and(page.locator('[data-state="down"]')).waitFor();
    assert.equal(await r.locator(".reason").innerText(), "edge unreachable: connection refused");
    await page.evaluate((id) => window.__mock.emit("tunnel_closed", { cluster: id, name: "analytics" }), id);
    await r.and(page.locator('[data-state="off"]')).waitFor();
    assert.equal(await toggle.getAttribute("aria-checked"), "false");

    // Switching it off from the window calls disconnect.
    await toggle.click();
    await r.and(page.locator('[data-state="connecting"]')).waitFor();
    await page.evaluate(() => window.__mock.clearCalls());
    await toggle.click();
    await r.and(page.locator('[data-state="off"]')).waitFor();
    assert.deepEqual(await calls(page), [{ cmd: "disconnect", args: { id } }]);
    clean(errors);
  } finally {
    await close();
  }
});

test("the search box and the filters narrow the rows", async () => {
  const { page, errors, close } = await openWindow();
  try {
    const search = page.getByRole("searchbox", { name: "Search clusters" });
    await search.fill("pay");
    await page.waitForFunction(() => document.querySelectorAll("li.row").length === 2);
    assert.deepEqual(await page.locator("li.row .name").allTextContents(), ["payments", "payments-staging"]);
    await search.fill("payments eu-west-1 staging");
    await page.waitForFunction(() => document.querySelectorAll("li.row").length === 1);
    await search.fill("no such cluster");
    await page.getByText("No cluster matches the search.").waitFor();
    await search.press("Escape");
    await page.waitForFunction(() => document.querySelectorAll("li.row").length === 9);

    await page.getByRole("combobox", { name: "Cloud", exact: true }).selectOption("gcp");
    await page.waitForFunction(() => document.querySelectorAll("li.row").length === 3);
    await page.getByRole("combobox", { name: "Environment", exact: true }).selectOption("dev");
    await page.waitForFunction(() => document.querySelectorAll("li.row").length === 1);
    assert.deepEqual(await page.locator("li.row .name").allTextContents(), ["playground"]);
    await page.getByRole("button", { name: "Clear filters" }).click();
    await page.getByRole("combobox", { name: "Region", exact: true }).selectOption("eu-west-1");
    await page.waitForFunction(() => document.querySelectorAll("li.row").length === 2);
    clean(errors);
  } finally {
    await close();
  }
});

test("a star calls set_favourite and persists: after a reload the row is starred and first", async () => {
  const { page, errors, close } = await openWindow();
  try {
    const id = "onprem/dev/lab";
    const star = page.getByRole("button", { name: "Favourite lab" });
    assert.equal(await star.getAttribute("aria-pressed"), "false");
    await star.click();
    await page.waitForFunction(
      (id) => window.__mock.calls().some((c) => c.cmd === "set_favourite" && c.args.id === id),
      id,
    );
    assert.deepEqual(
      (await calls(page)).filter((c) => c.cmd === "set_favourite"),
      [{ cmd: "set_favourite", args: { id, favourite: true } }],
    );
    // Focus follows the row into the favourites section.
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("aria-label")), "Favourite lab");

    await page.reload();
    await page.locator("li.row").first().waitFor();
    assert.equal(await page.locator("li.row").first().getAttribute("data-id"), id);
    assert.equal(await page.getByRole("button", { name: "Favourite lab" }).getAttribute("aria-pressed"), "true");
    assert.equal(await page.locator(".group-2 .group-title").first().innerText(), "Favourites");
    clean(errors);
  } finally {
    await close();
  }
});

test("keyboard: / focuses the search, Tab reaches a toggle, Space switches it", async () => {
  const { page, errors, close } = await openWindow();
  try {
    await page.locator("body").click({ position: { x: 5, y: 5 } });
    await page.keyboard.press("/");
    await page.waitForFunction(() => document.activeElement?.id === "search");
    await page.keyboard.type("sandbox");
    await page.waitForFunction(() => document.querySelectorAll("li.row").length === 1);
    let label = null;
    for (let i = 0; i < 20 && label !== "Tunnel to sandbox"; i++) {
      await page.keyboard.press("Tab");
      label = await page.evaluate(() => document.activeElement?.getAttribute("aria-label"));
    }
    assert.equal(label, "Tunnel to sandbox", "Tab reaches the row's toggle");
    // The focus ring is visible (an outline, from :focus-visible).
    const outline = await page.evaluate(() => getComputedStyle(/** @type {Element} */ (document.activeElement)).outlineStyle);
    assert.equal(outline, "solid");
    await page.keyboard.press("Space");
    await page.waitForFunction(() => window.__mock.calls().some((c) => c.cmd === "connect"));
    assert.deepEqual(
      (await calls(page)).filter((c) => c.cmd === "connect"),
      [{ cmd: "connect", args: { id: "aws/dev/sandbox" } }],
    );
    // Focus stays on the toggle while the command runs and after; Enter switches it off.
    await row(page, "aws/dev/sandbox").and(page.locator('[data-state="connecting"]')).waitFor();
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("aria-label")), "Tunnel to sandbox");
    await page.keyboard.press("Enter");
    await row(page, "aws/dev/sandbox").and(page.locator('[data-state="off"]')).waitFor();
    assert.deepEqual((await calls(page)).filter((c) => c.cmd === "disconnect"), [
      { cmd: "disconnect", args: { id: "aws/dev/sandbox" } },
    ]);
    // A group collapses from the keyboard too.
    await page.keyboard.press("Shift+Tab");
    for (let i = 0; i < 10 && !(await page.evaluate(() => document.activeElement?.classList.contains("group-toggle"))); i++) {
      await page.keyboard.press("Shift+Tab");
    }
    const heading = await page.evaluate(() => document.activeElement?.textContent);
    assert.match(heading ?? "", /^▾dev/);
    await page.keyboard.press("Enter");
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("aria-expanded")), "true", "a search keeps groups open");
    clean(errors);
  } finally {
    await close();
  }
});

test("follows the system theme: dark colours under prefers-color-scheme: dark", async () => {
  for (const scheme of /** @type {const} */ (["light", "dark"])) {
    const { page, errors, close } = await openWindow({ colorScheme: scheme });
    try {
      // Relative luminance of the page background, from its computed rgb().
      const lum = await page.evaluate(() => {
        const [r, g, b] = (getComputedStyle(document.body).backgroundColor.match(/\d+/g) ?? []).map(Number);
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
      });
      if (scheme === "dark") assert.ok(lum < 0.2, `dark background, got luminance ${lum}`);
      else assert.ok(lum > 0.8, `light background, got luminance ${lum}`);
      clean(errors);
    } finally {
      await close();
    }
  }
});

test("a failed command shows its message inline, never the raw error object", async () => {
  const { page, errors, close } = await openWindow();
  try {
    await page.evaluate(() => window.__mock.failNext("connect", { code: "tunnel", message: "no free local port in 17000-17099" }));
    await page.getByRole("switch", { name: "Tunnel to checkout" }).click();
    const alert = row(page, "aws/prod/checkout").getByRole("alert");
    await alert.waitFor();
    assert.equal(await alert.innerText(), "no free local port in 17000-17099");
    assert.equal(await page.getByText("[object Object]").count(), 0);
    assert.equal(await row(page, "aws/prod/checkout").getAttribute("data-state"), "off");
    clean(errors);
  } finally {
    await close();
  }
});

test("Use context and Copy kubectl command", async () => {
  const { page, errors, close } = await openWindow();
  try {
    const r = row(page, "gcp/staging/ml-training");
    await r.getByRole("button", { name: "Use context" }).click();
    await page.getByText("kubectl now uses context tun-gcp-staging-ml-training").waitFor();
    await r.getByRole("button", { name: "Copy kubectl command" }).click();
    const command = "kubectl --context 'tun-gcp-staging-ml-training' get namespaces";
    await page.getByText("Copied to the clipboard:").waitFor();
    assert.equal(await page.locator(".notice-code").textContent(), command);
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), command);
    clean(errors);
  } finally {
    await close();
  }
});

test("Copy kubectl command without clipboard access: the command stays, selectable, until dismissed", async () => {
  const { page, errors, close } = await openWindow();
  try {
    // A webview that refuses the write (as WebKitGTK did after an await).
    await page.evaluate(() => {
      navigator.clipboard.writeText = () => Promise.reject(new DOMException("denied", "NotAllowedError"));
    });
    // Where the first row is on the page (not in the viewport: the click may scroll).
    const top = () =>
      page.locator("li.row").first().evaluate((e) => e.getBoundingClientRect().top + window.scrollY);
    const before = await top();
    await row(page, "gcp/staging/ml-training").getByRole("button", { name: "Copy kubectl command" }).click();
    const code = page.locator(".notice-code");
    await code.waitFor();
    assert.equal(await code.textContent(), "kubectl --context 'tun-gcp-staging-ml-training' get namespaces");
    // Over the page, not in its flow: nothing under it moved.
    assert.equal(await top(), before);
    assert.equal(await code.evaluate((e) => getComputedStyle(e).userSelect), "all");
    // Still there after the time a passing notice fades (6 s); gone when dismissed.
    await page.waitForTimeout(6500);
    assert.equal(await code.count(), 1);
    await page.getByRole("button", { name: "Dismiss message" }).click();
    assert.equal(await code.count(), 0);
    clean(errors);
  } finally {
    await close();
  }
});

test("discovery refresh shows progress, then per-source errors", async () => {
  const { page, errors, close } = await openWindow();
  try {
    await page.getByRole("button", { name: "Refresh discovery" }).click();
    await page.locator("progress").waitFor();
    await page.getByText(/\d of 4/).first().waitFor();
    const problems = page.getByRole("list", { name: "Discovery problems" });
    await problems.waitFor();
    assert.match(await problems.innerText(), /gke[\s\S]*dev-123: PermissionDenied/);
    assert.match(await page.locator(".discovery-status").innerText(), /9 clusters from 4 sources, 1 with problems/);
    assert.equal(await page.locator("progress").count(), 0);
    clean(errors);
  } finally {
    await close();
  }
});

test("a first run explains itself: the demo lab, where clusters come from, the files, no keychain", async () => {
  const { page, errors, close } = await openWindow();
  try {
    // On the demo lab: a banner says so, with where real clusters would go.
    const demo = page.getByRole("region", { name: "Demo lab" });
    await demo.waitFor();
    const text = (await demo.textContent()) ?? "";
    assert.match(text, /These are demo clusters/);
    assert.match(text, /\/home\/dev\/\.config\/k8s-tunnels\/inventory\.yaml/);
    assert.match(text, /\/home\/dev\/\.config\/k8s-tunnels\/config\.yaml/);
    assert.equal(await page.getByRole("region", { name: "No keychain" }).count(), 0);

    // A refresh with no discovery source says where the listed clusters come from, not "0 from 0".
    await page.evaluate(() => window.__mock.emit("discovery", { phase: "finished", outcomes: [] }));
    const status = page.locator(".discovery-status");
    await status.getByText("No discovery source is configured").waitFor();
    assert.match((await status.textContent()) ?? "", /the 9 clusters listed come from the demo lab\./);

    // Settings shows the files, config.yaml marked as not created yet.
    await page.getByRole("button", { name: "Settings" }).click();
    const files = page.getByLabel("Files");
    await files.waitFor();
    const listed = (await files.textContent()) ?? "";
    assert.match(listed, /config\.yaml \(not created yet\)/);
    assert.match(listed, /\/home\/dev\/\.kube\/config/);
    // And the version the app was built as, as the tray menu and the CLI show it.
    assert.equal((await page.getByLabel("Version").textContent())?.trim(), "k8s-tunnels 0.1.0");

    // Without a keychain the window says what that means and what to do, with the reason.
    await page.evaluate(() =>
      window.__mock.setAbout({ demo_lab: false, keychain_unavailable: "no Secret Service on the session bus" }),
    );
    await page.reload();
    const keychain = page.getByRole("region", { name: "No keychain" });
    await keychain.waitFor();
    assert.match((await keychain.textContent()) ?? "", /sign in again after the app restarts/);
    assert.match((await keychain.textContent()) ?? "", /no Secret Service on the session bus/);
    assert.equal(await page.getByRole("region", { name: "Demo lab" }).count(), 0);
    await page.evaluate(() => window.__mock.emit("discovery", { phase: "finished", outcomes: [] }));
    await status.getByText("No discovery source is configured").waitFor();
    assert.match((await status.textContent()) ?? "", /come from the inventory file \/home\/dev\/\.config\/k8s-tunnels\/inventory\.yaml\./);
    clean(errors);
  } finally {
    await close();
  }
});

test("settings: sources read-only, saving calls save_settings; an invalid value shows its message", async () => {
  const { page, errors, close } = await openWindow();
  try {
    await page.getByRole("button", { name: "Settings" }).click();
    await page.getByRole("list", { name: "Discovery sources" }).waitFor();
    assert.equal(await page.locator(".source").count(), 4);
    await page.getByLabel("kubeconfig file").fill("/tmp/kube/tunnels.yaml");
    await page.getByLabel("Switch kubectl's context when a tunnel connects").check();
    await page.getByLabel("Reconnect at start").uncheck();
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByText("Settings saved.").waitFor();
    const saved = (await calls(page)).filter((c) => c.cmd === "save_settings");
    assert.deepEqual(saved, [
      {
        cmd: "save_settings",
        args: {
          settings: {
            kubeconfig_prefix: "tun-",
            kubeconfig_path: "/tmp/kube/tunnels.yaml",
            switch_context_on_connect: true,
            notifications: true,
            start_at_login: false,
            reconnect_at_start: false,
          },
        },
      },
    ]);
    await page.getByLabel("Context prefix").fill("");
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByRole("alert").filter({ hasText: "the context prefix must not be empty" }).waitFor();
    clean(errors);
  } finally {
    await close();
  }
});

test("the activity log lists recent events, newest first, and follows activity events", async () => {
  const { page, errors, close } = await openWindow();
  try {
    await page.getByRole("switch", { name: "Tunnel to payments", exact: true }).click();
    await page.getByRole("button", { name: "Activity" }).click();
    const log = page.getByRole("log");
    await log.waitFor();
    await page.evaluate(() =>
      window.__mock.emit("activity", { at: new Date().toISOString(), level: "error", cluster: "payments", message: "Tunnel dropped: edge unreachable" }),
    );
    await log.getByText("Tunnel dropped: edge unreachable").waitFor();
    const lines = await log.locator("li .activity-message").allTextContents();
    assert.deepEqual(lines, ["Tunnel dropped: edge unreachable", "Tunnel opened on 127.0.0.1:17001", "Discovery found 9 clusters"]);
    clean(errors);
  } finally {
    await close();
  }
});

// Always runs (a screenshot that cannot be taken is a failure); only UI_SCREENSHOT=1 keeps it in docs/.
test("screenshot of the window with a demo-like catalog", async () => {
  const { page, errors, close } = await openWindow({ viewport: { width: 1180, height: 860 } });
  try {
    await page.evaluate(() => window.__mock.setAutoUp(true));
    for (const name of ["payments", "checkout", "factory-floor"]) {
      await page.getByRole("button", { name: `Favourite ${name}`, exact: true }).click();
    }
    for (const name of ["payments", "analytics", "factory-floor", "sandbox"]) {
      await page.getByRole("switch", { name: `Tunnel to ${name}`, exact: true }).click();
    }
    await page.evaluate(async () => {
      const m = window.__mock;
      await m.emit("tunnel", m.status("aws/prod/payments", { state: "up", port: 17001, open_connections: 3, total_connections: 41, bytes_up: 182_400, bytes_down: 4_812_000, latency_ms: 23, api_ms: 29, kubernetes_version: "v1.32.4" }));
      await m.emit("tunnel", m.status("gcp/prod/analytics", { state: "up", port: 17002, open_connections: 1, total_connections: 7, bytes_up: 20_480, bytes_down: 911_000, latency_ms: 38, api_ms: 44, kubernetes_version: "v1.31.6" }));
      await m.emit("tunnel", m.status("onprem/prod/factory-floor", { state: "up", port: 17003, bytes_up: 5_300, bytes_down: 61_000, latency_ms: 4, api_ms: 6, kubernetes_version: "v1.30.11" }));
      await m.emit("tunnel", m.status("aws/dev/sandbox", { state: "down", port: 17004, reason: "edge unreachable: connection refused (retrying)" }));
    });
    await row(page, "aws/dev/sandbox").and(page.locator('[data-state="down"]')).waitFor();
    await page.locator("body").click({ position: { x: 2, y: 2 } });
    const path = process.env.UI_SCREENSHOT === "1"
      ? join(UI_DIR, "..", "docs", "screenshot-window.png")
      : join(tmpdir(), `k8s-tunnels-window-${process.pid}.png`);
    // Every row's content stays inside its card, figures and switch included.
    const overflowing = await page.evaluate(() =>
      Array.from(document.querySelectorAll("li.row"))
        .filter((li) => {
          const card = li.getBoundingClientRect();
          return Array.from(li.querySelectorAll("dl.figures, .actions, [role=switch]")).some(
            (e) => e.getBoundingClientRect().right > card.right + 0.5,
          );
        })
        .map((li) => li.querySelector(".name")?.textContent),
    );
    assert.deepEqual(overflowing, [], "rows whose content leaves the card");
    const png = await page.screenshot({ path, fullPage: true });
    assert.ok(png.length > 10_000, "the screenshot holds a rendered window");
    clean(errors);
  } finally {
    await close();
  }
});
