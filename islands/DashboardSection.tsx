/**
 * One dashboard section. The server renders its content into the page (it works without JavaScript);
 * in the browser the section refreshes itself from its fragment URL every minute and on "Refresh",
 * keeping what it shows meanwhile. A section that fails shows its own error and "Try again", so one
 * failing data source never blanks the others. The fragment is HTML rendered (and escaped) by our own
 * server.
 */
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";

export interface Props {
  /** Fragment URL, e.g. /backup/dashboard/sections/summary */
  url: string;
  title: string;
  /** CSS modifier of the card: the guide's colour of the exception queue. */
  tone?: "red" | "orange" | "yellow" | "neutral";
  /** How the server render went; without it the section loads its fragment on mount. */
  state?: "ready" | "error";
  /** The server's error message when `state` is "error". */
  error?: string;
  /**
   * The server-rendered fragment (server render only, not serialized: hydration keeps the markup the
   * server wrote, and the first refresh replaces it).
   */
  html?: string;
}

/** How often a section refreshes itself while the page is visible. */
const REFRESH_MS = 60_000;

export default function DashboardSection(props: Props) {
  const state = useSignal<"loading" | "ready" | "error">(props.state ?? "loading");
  const html = useSignal(props.html ?? "");
  const error = useSignal(props.error ?? "");
  const busy = useSignal(false);
  const load = async () => {
    busy.value = true;
    try {
      const res = await fetch(props.url, { headers: { accept: "text/html" } });
      const body = await res.text();
      if (!res.ok) {
        const message = new DOMParser().parseFromString(body, "text/html").querySelector("[data-error]")
          ?.textContent;
        throw new Error(message || `The server answered ${res.status}`);
      }
      html.value = body;
      state.value = "ready";
    } catch (e) {
      error.value = e instanceof Error ? e.message : String(e);
      state.value = "error";
    } finally {
      busy.value = false;
    }
  };
  useEffect(() => {
    if (!props.state) load();
    const timer = setInterval(() => {
      if (document.visibilityState === "visible" && !busy.value) load();
    }, REFRESH_MS);
    return () => clearInterval(timer);
  }, [props.url]);
  return (
    <section
      class={`panel dash-section dash-${props.tone ?? "neutral"}`}
      aria-busy={busy.value || state.value === "loading"}
      data-section-state={state.value}
    >
      <div class="dash-head">
        <h2>{props.title}</h2>
        <a
          class="dash-refresh"
          href="/backup/dashboard"
          aria-label={`Refresh ${props.title}`}
          onClick={(e) => {
            e.preventDefault();
            load();
          }}
        >
          {busy.value ? "Refreshing…" : "Refresh"}
        </a>
      </div>
      {state.value === "loading" && <p class="muted dash-loading">Loading…</p>}
      {state.value === "error" && (
        <div class="dash-error" role="alert">
          <p>This section could not load: {error.value}</p>
          <button type="button" class="btn" onClick={load}>Try again</button>
        </div>
      )}
      {state.value === "ready" && <div class="dash-body" dangerouslySetInnerHTML={{ __html: html.value }} />}
    </section>
  );
}
