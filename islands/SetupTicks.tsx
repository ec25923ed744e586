/**
 * The first-run page's live ticks: "BES registered" and "agent enrolled", polled from the JSON API
 * until both are done. The server renders the state at page load; without JavaScript the page's
 * Refresh link reloads it.
 */
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";

export interface Ticks {
  besRegistered: boolean;
  besOnline: boolean;
  agentEnrolled: boolean;
}

export interface Props {
  /** JSON endpoint answering the setup progress (GET /api/v1/dashboard/getting-started). */
  url: string;
  initial: Ticks;
  /** Poll interval while something is still awaited. */
  intervalMs?: number;
}

/** Reads the ticks from the endpoint's answer. Throws when the request fails. */
async function fetchTicks(url: string): Promise<Ticks> {
  const res = await fetch(url, { headers: { accept: "application/json" } });
  if (!res.ok) throw new Error(`Request failed: GET ${url}`);
  const body = await res.json();
  return {
    besRegistered: body.engines.registered > 0,
    besOnline: body.engines.online > 0,
    agentEnrolled: body.hosts.enrolled === true,
  };
}

export default function SetupTicks(props: Props) {
  const ticks = useSignal<Ticks>(props.initial);
  const problem = useSignal("");
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      try {
        ticks.value = await fetchTicks(props.url);
        problem.value = "";
      } catch (e) {
        problem.value = e instanceof Error ? e.message : String(e);
      }
      const t = ticks.value;
      if (!stopped && !(t.besOnline && t.agentEnrolled)) timer = setTimeout(poll, props.intervalMs ?? 3000);
    };
    timer = setTimeout(poll, props.intervalMs ?? 3000);
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [props.url]);
  const t = ticks.value;
  const item = (key: string, done: boolean, doneText: string, waitText: string) => (
    <li class={done ? "done" : "todo"} data-tick={key} data-done={String(done)}>
      <span class="check" aria-hidden="true">{done ? "✓" : "…"}</span> {done ? doneText : waitText}
    </li>
  );
  return (
    <div class="setup-ticks" aria-live="polite">
      <ul class="checklist">
        {item(
          "bes",
          t.besRegistered,
          t.besOnline ? "BES registered and online" : "BES registered (waiting for its first heartbeat)",
          "Waiting for a BES to register…",
        )}
        {item("agent", t.agentEnrolled, "Agent enrolled", "Waiting for an agent to enroll…")}
      </ul>
      {problem.value && <p class="hint" role="status">Could not check: {problem.value}. Retrying.</p>}
    </div>
  );
}
