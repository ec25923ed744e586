/**
 * Retry of a job (guide, "Retrying a Failed Job"). The server renders a plain POST form, so the retry
 * works without JavaScript; hydrated, it posts to the JSON API and lists the runs it queued in place. The
 * button is disabled with the reason shown whenever `retryBlockedReason` refuses — the same function the
 * server enforces. Rendered only for actors with backup.manage on the job.
 */
import { useComputed, useSignal } from "@preact/signals";
import { retryBlockedReason, type RetryFacts } from "../domain/job_rules.ts";
import { Csrf } from "../components/ui.tsx";

export interface QueuedRun {
  id: string;
  kind: string;
  status: string;
  hostname: string;
}

export interface Props {
  jobId: string;
  csrfToken: string;
  facts: RetryFacts;
}

export default function RetryJob(props: Props) {
  const facts = useSignal(props.facts);
  const busy = useSignal(false);
  const error = useSignal("");
  const queued = useSignal<QueuedRun[] | null>(null);
  const reason = useComputed(() => retryBlockedReason(facts.value));
  const url = `/api/v1/jobs/${props.jobId}/retry`;

  const submit = async (event: Event) => {
    event.preventDefault();
    if (reason.value || busy.value) return;
    busy.value = true;
    error.value = "";
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: { accept: "application/json", "x-csrf-token": props.csrfToken },
      });
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        error.value = body?.error?.message ?? `Request failed: POST ${url}`;
        return;
      }
      const runs: QueuedRun[] = body.runs;
      queued.value = runs;
      const first = runs[0];
      facts.value = {
        ...facts.value,
        latest: first ? { status: "pending", retryable: false, trigger: "retry", kind: first.kind } : null,
      };
    } catch {
      error.value = `Request failed: POST ${url}`;
    } finally {
      busy.value = false;
    }
  };

  return (
    <div class="retry-job" data-testid="retry-job">
      <form method="post" action={`/backup/jobs/${props.jobId}/retry`} class="inline-form" onSubmit={submit}>
        <Csrf token={props.csrfToken} />
        <button
          type="submit"
          class={reason.value ? "btn muted" : "btn btn--primary"}
          disabled={Boolean(reason.value) || busy.value}
          aria-describedby={reason.value ? `retry-reason-${props.jobId}` : undefined}
        >
          {busy.value ? "Retrying…" : "Retry"}
        </button>{" "}
        {reason.value && (
          <span class="hint" id={`retry-reason-${props.jobId}`} data-testid="retry-reason">
            {reason.value}
          </span>
        )}
      </form>
      {error.value && <p class="form-error" role="alert" data-testid="retry-error">{error.value}</p>}
      {queued.value && (
        <div role="status" data-testid="retry-result">
          <p>
            Retry queued: {queued.value.length} new run{queued.value.length === 1 ? "" : "s"}.{" "}
            <a href={`/backup/jobs/${props.jobId}`}>Reload the history</a>
          </p>
          <ul>
            {queued.value.map((r) => (
              <li key={r.id} data-testid="retry-run">
                {r.hostname} — {r.kind}, {r.status}
              </li>
            ))}
          </ul>
        </div>
      )}
    </div>
  );
}
