/** Plain words for the system's internal states (a reader should never meet `storage_critical`). */
import { readCron } from "../domain/cron_words.ts";
import { Badge } from "./ui.tsx";

/** Why the system paused a policy, in words. */
const PAUSE_REASONS: Record<string, string> = { storage_critical: "storage critical" };

/** "Paused: storage critical (auto)": the system paused it and resumes it by itself. */
export function pausedText(reason: string): string {
  return `Paused: ${PAUSE_REASONS[reason] ?? reason.replaceAll("_", " ")} (auto)`;
}

/** The paused badge, with a link to the storage target whose state paused it when known. */
export function PausedBadge(props: { reason: string; targetId?: string | null }) {
  return (
    <span class="paused">
      <Badge tone="warn">{pausedText(props.reason)}</Badge>
      {props.targetId && (
        <>
          {" "}
          <a href={`/backup/storage/${props.targetId}`} data-testid="paused-target">see the storage target</a>
        </>
      )}
    </span>
  );
}

/** A schedule in words beside its expression, shown once: only the expression when it cannot be read. */
export function CronReading(props: { expression: string }) {
  const words = readCron(props.expression);
  return words
    ? (
      <>
        {words} <code>{props.expression}</code>
      </>
    )
    : <code>{props.expression}</code>;
}
