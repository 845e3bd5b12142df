// The window's secondary parts: discovery refresh with progress and per-source errors, login
// notices, the activity log and the settings page.
import { useEffect, useState } from "preact/hooks";
import type { AboutInfo, Activity, Ipc, Settings, SourceInfo } from "./ipc";
import { errorMessage, formatTime, type DiscoveryState, type LoginNotice } from "./model";

/** What a first run needs to know, in plain words: the clusters are a demo lab and how to
 *  reach real ones; sign-ins are not kept without a keychain. */
export function FirstRunBanners(props: { about: AboutInfo; clusters: number }) {
  const { about } = props;
  return (
    <>
      {about.demo_lab && (
        <section class="banner banner-info" aria-label="Demo lab">
          <p>
            <strong>These are demo clusters.</strong> Nothing is configured yet, so k8s-tunnels runs a small demo
            lab on this computer: {props.clusters === 1 ? "one cluster" : `${props.clusters} clusters`} you can
            connect to and use with kubectl, to try the app.
          </p>
          <p>
            To reach your own clusters, list them in the inventory file <code>{about.inventory_file}</code> or
            configure a cloud source (AWS, Google Cloud, Vault) in <code>{about.config_file}</code>, then restart
            the app. The README's "Configuration" section shows both.
          </p>
        </section>
      )}
      {about.keychain_unavailable !== null && (
        <section class="banner" aria-label="No keychain">
          <p>
            <strong>No keychain:</strong> sign-ins are kept in memory only, so you will sign in again after the app
            restarts. Start or unlock your desktop's keyring (GNOME Keyring, KWallet; the Keychain on macOS, the
            Credential Manager on Windows), then restart the app.
          </p>
          <p class="hint">Why: {about.keychain_unavailable}</p>
        </section>
      )}
    </>
  );
}

export function DiscoveryPanel(props: {
  discovery: DiscoveryState;
  refresh: () => void;
  about: AboutInfo | null;
  listed: number;
}) {
  const d = props.discovery;
  const failed = (d.outcomes ?? []).filter((o) => o.errors.length > 0 || o.rejected.length > 0);
  const found = (d.outcomes ?? []).reduce((n, o) => n + o.clusters, 0);
  return (
    <section class="discovery" aria-label="Discovery">
      <button
        type="button"
        class="secondary refresh"
        // Not `disabled`: keyboard focus stays on the button while discovery runs.
        aria-disabled={d.running}
        onClick={() => {
          if (!d.running) props.refresh();
        }}
      >
        {d.running ? "Refreshing…" : "Refresh discovery"}
      </button>
      <div class="discovery-status" role="status" aria-live="polite">
        {d.running && (
          <span class="progress-line">
            <progress
              value={d.total > 0 ? d.done : undefined}
              max={d.total > 0 ? d.total : undefined}
              aria-label="Discovery progress"
            />
            <span>
              {d.source ? `${d.source}: ` : ""}
              {d.total > 0 ? `${d.done} of ${d.total}` : "starting"}
            </span>
          </span>
        )}
        {!d.running && d.outcomes && d.outcomes.length === 0 && (
          <span>
            No discovery source is configured: the {props.listed} cluster{props.listed === 1 ? "" : "s"} listed
            come{props.listed === 1 ? "s" : ""} from{" "}
            {props.about?.demo_lab ? (
              "the demo lab"
            ) : (
              <>
                the inventory file <code>{props.about?.inventory_file ?? "inventory.yaml"}</code>
              </>
            )}
            .
          </span>
        )}
        {!d.running && d.outcomes && d.outcomes.length > 0 && (
          <span>
            Last refresh: {found} cluster{found === 1 ? "" : "s"} from {d.outcomes.length} source
            {d.outcomes.length === 1 ? "" : "s"}
            {failed.length > 0 ? `, ${failed.length} with problems` : ""}
          </span>
        )}
        {d.error && (
          <span class="error-line" role="alert">
            Discovery failed: {d.error}
          </span>
        )}
      </div>
      {!d.running && failed.length > 0 && (
        <ul class="source-errors" aria-label="Discovery problems">
          {failed.map((o) => (
            <li>
              <strong>{o.source}</strong>
              <ul>
                {o.errors.map((e) => (
                  <li class="error-line">{e}</li>
                ))}
                {o.rejected.map((r) => (
                  <li class="warning-line">Rejected: {r}</li>
                ))}
              </ul>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

export function LoginBanners(props: { logins: Record<string, LoginNotice> }) {
  const [dismissed, setDismissed] = useState<ReadonlySet<LoginNotice>>(new Set());
  const shown = Object.values(props.logins).filter((l) => !dismissed.has(l));
  if (shown.length === 0) return null;
  return (
    <div class="logins">
      {shown.map((l) => (
        <p class={l.kind === "required" ? "banner banner-error" : "banner"} role="alert">
          <span>{loginText(l)}</span>
          {l.kind === "sign_in" && (
            // Selectable text, not a link: the webview does not navigate away, and the user
            // picks the browser (and profile) the sign-in belongs in.
            <code class="sign-in-url" aria-label={`Sign-in link for ${l.application}`}>
              {l.url}
            </code>
          )}
          <button
            type="button"
            class="link"
            aria-label={`Dismiss login notice for ${l.application}`}
            onClick={() => setDismissed(new Set([...dismissed, l]))}
          >
            ×
          </button>
        </p>
      ))}
    </div>
  );
}

function loginText(l: LoginNotice): string {
  switch (l.kind) {
    case "required":
      return `Login required for ${l.application}: its tunnels stay down until you log in again.`;
    case "expiring":
      return `Login for ${l.application} expires in ${Math.max(1, Math.round(l.seconds_left / 60))} min.`;
    case "sign_in":
      return l.browser_opened
        ? `Signing in to ${l.application} in your browser: allow it only if the page shows the code ${l.code}. If no tab opened, open this link:`
        : `No browser could be opened. To sign in to ${l.application}, open this link in a browser and allow it if the page shows the code ${l.code}:`;
  }
}

export function ActivityView(props: { activity: Activity[] }) {
  const items = [...props.activity].reverse();
  return (
    <main class="activity">
      <h2>Recent activity</h2>
      {items.length === 0 ? (
        <p class="empty">Nothing yet.</p>
      ) : (
        <div role="log" aria-live="polite" aria-label="Activity log, newest first">
        <ol class="activity-log">
          {items.map((a) => (
            <li class={`activity-item level-${a.level}`}>
              <time dateTime={a.at}>{formatTime(a.at)}</time>
              <span class={`level level-${a.level}`}>{a.level}</span>
              {a.cluster && <span class="activity-cluster">{a.cluster}</span>}
              <span class="activity-message">{a.message}</span>
            </li>
          ))}
        </ol>
        </div>
      )}
    </main>
  );
}

export function SettingsView({ ipc, about }: { ipc: Ipc; about: AboutInfo | null }) {
  const [settings, setSettings] = useState<Settings | null>(null);
  const [sources, setSources] = useState<SourceInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);

  useEffect(() => {
    ipc.call("settings").then(setSettings, (e) => setError(errorMessage(e)));
    ipc.call("sources").then(setSources, (e) => setError(errorMessage(e)));
  }, [ipc]);

  const save = async (e: Event) => {
    e.preventDefault();
    if (!settings) return;
    setSaving(true);
    setError(null);
    setSaved(null);
    try {
      setSettings(await ipc.call("save_settings", { settings }));
      setSaved("Settings saved.");
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setSaving(false);
    }
  };
  const set = <K extends keyof Settings>(k: K, v: Settings[K]) => {
    if (settings) setSettings({ ...settings, [k]: v });
    setSaved(null);
  };

  return (
    <main class="settings">
      <h2>Settings</h2>
      {error && (
        <p class="error-line" role="alert">
          {error}
        </p>
      )}
      {settings ? (
        <form class="settings-form" onSubmit={save}>
          <fieldset>
            <legend>kubeconfig</legend>
            <label class="field">
              <span>kubeconfig file</span>
              <input
                type="text"
                name="kubeconfig_path"
                placeholder="KUBECONFIG or ~/.kube/config"
                value={settings.kubeconfig_path ?? ""}
                onInput={(e) => set("kubeconfig_path", e.currentTarget.value.trim() || null)}
              />
            </label>
            <label class="field">
              <span>Context prefix</span>
              <input
                type="text"
                name="kubeconfig_prefix"
                value={settings.kubeconfig_prefix}
                onInput={(e) => set("kubeconfig_prefix", e.currentTarget.value)}
              />
            </label>
            <Check
              name="switch_context_on_connect"
              label="Switch kubectl's context when a tunnel connects"
              checked={settings.switch_context_on_connect}
              onChange={(v) => set("switch_context_on_connect", v)}
            />
          </fieldset>
          <fieldset>
            <legend>Desktop</legend>
            <Check
              name="notifications"
              label="Notifications (tunnel dropped or back, login, discovery problems)"
              checked={settings.notifications}
              onChange={(v) => set("notifications", v)}
            />
            <Check
              name="start_at_login"
              label="Start at login"
              checked={settings.start_at_login}
              onChange={(v) => set("start_at_login", v)}
            />
            <Check
              name="reconnect_at_start"
              label="Reconnect at start: reopen the tunnels that were on when the app quit"
              checked={settings.reconnect_at_start}
              onChange={(v) => set("reconnect_at_start", v)}
            />
          </fieldset>
          <div class="form-actions">
            <button type="submit" class="primary" disabled={saving}>
              {saving ? "Saving…" : "Save"}
            </button>
            <span role="status" aria-live="polite" class="saved">
              {saved}
            </span>
          </div>
        </form>
      ) : (
        !error && <p class="empty">Loading settings…</p>
      )}
      {about && (
        <>
          <h3>Files</h3>
          <dl class="files" aria-label="Files">
            <dt>Configuration (sources, Access)</dt>
            <dd>
              <code>{about.config_file}</code>
              {!about.config_exists && <span class="hint"> (not created yet)</span>}
            </dd>
            <dt>Inventory (clusters listed by hand)</dt>
            <dd>
              <code>{about.inventory_file}</code>
            </dd>
            <dt>kubeconfig the app writes its contexts into</dt>
            <dd>
              {about.kubeconfig_files.length > 0 ? (
                about.kubeconfig_files.map((f) => <code class="file">{f}</code>)
              ) : (
                <span class="hint">none found (set KUBECONFIG or the kubeconfig file above)</span>
              )}
            </dd>
          </dl>
        </>
      )}
      <h3>Discovery sources</h3>
      <p class="hint">
        Read-only here: sources are edited in <code>{about?.config_file ?? "config.yaml"}</code>.
      </p>
      {sources &&
        (sources.length === 0 ? (
          <p class="empty">No source configured: the demo lab is used.</p>
        ) : (
          <ul class="sources" aria-label="Discovery sources">
            {sources.map((s) => (
              <li class={s.enabled ? "source" : "source source-disabled"}>
                <strong>{s.name}</strong>
                <span class="badge">{s.enabled ? "enabled" : "disabled"}</span>
                <span class="meta">{s.detail}</span>
              </li>
            ))}
          </ul>
        ))}
      {about && (
        <p class="about-line hint" aria-label="Version">
          k8s-tunnels {about.version}
        </p>
      )}
    </main>
  );
}

function Check(props: {
  name: string;
  label: string;
  checked: boolean;
  onChange: (v: boolean) => void;
}) {
  return (
    <label class="check">
      <input
        type="checkbox"
        name={props.name}
        checked={props.checked}
        onChange={(e) => props.onChange(e.currentTarget.checked)}
      />
      <span>{props.label}</span>
    </label>
  );
}
