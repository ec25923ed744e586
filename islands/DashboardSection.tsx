/**
 * One dashboard section that loads on its own: it fetches its server-rendered fragment, shows a
 * loading state meanwhile and an error with "Try again" if that fails, so a failing section never
 * blanks the others. The fragment is HTML rendered (and escaped) by our own server.
 */
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";

export interface Props {
  /** Fragment URL, e.g. /backup/dashboard/sections/summary */
  url: string;
  title: string;
  /** CSS modifier of the card: the guide's colour of the exception queue. */
  tone?: "red" | "orange" | "yellow" | "neutral";
}

export default function DashboardSection(props: Props) {
  const state = useSignal<"loading" | "ready" | "error">("loading");
  const html = useSignal("");
  const error = useSignal("");
  const load = async () => {
    state.value = "loading";
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
    }
  };
  useEffect(() => {
    load();
  }, [props.url]);
  return (
    <section
      class={`panel dash-section dash-${props.tone ?? "neutral"}`}
      aria-busy={state.value === "loading"}
      data-section-state={state.value}
    >
      <h2>{props.title}</h2>
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
