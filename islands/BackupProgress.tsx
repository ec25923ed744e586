/** Live progress of a running self-backup, polled every 2 s from the health API until it finishes. */
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";

export interface Trigger {
  id: string;
  database: string;
  status: string;
  progress: { phase: string; entries: number };
  error: string | null;
}

export interface Props {
  running: string | null;
  triggers: Trigger[];
}

export default function BackupProgress(props: Props) {
  const running = useSignal(props.running);
  const triggers = useSignal(props.triggers);
  useEffect(() => {
    if (!running.value) return;
    const timer = setInterval(async () => {
      try {
        const res = await fetch("/api/health/infra/backup", { headers: { accept: "application/json" } });
        if (!res.ok) throw new Error("Request failed: GET /api/health/infra/backup");
        const body = await res.json();
        triggers.value = body.recentTriggers;
        running.value = body.running;
        if (!body.running) clearInterval(timer);
      } catch {
        // keep the last known state; the next tick retries
      }
    }, 2000);
    return () => clearInterval(timer);
  }, []);
  const current = triggers.value.find((t) => t.id === running.value);
  const last = triggers.value[0];
  return (
    <div class="panel" aria-live="polite" data-testid="backup-progress">
      <h2>Backup worker</h2>
      {current
        ? (
          <p>
            Running: {current.database} DB — <strong>{current.progress.phase}</strong>
            {current.progress.entries ? `, ${current.progress.entries} entries` : ""}…
          </p>
        )
        : <p>Idle.</p>}
      {!current && last && (
        <p class="hint" data-testid="last-trigger">
          Last: {last.database} DB {last.status}
          {last.error ? ` — ${last.error}` : ""}
        </p>
      )}
    </div>
  );
}
