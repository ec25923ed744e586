/**
 * A cron input that shows, as the operator types, a plain-words reading and the next five runs in
 * the operator's own time zone (the browser's; the server renders the same in UTC). Errors show live.
 */
import { useComputed, useSignal } from "@preact/signals";
import { compileCron, readCron } from "../domain/cron_rules.ts";

export interface Props {
  name: string;
  label: string;
  value: string;
  /** The policy's schedule time zone (how the expression is read). */
  scheduleZone: string;
  required?: boolean;
  hint?: string;
  error?: string;
}

function viewerZone(): string {
  return typeof Intl !== "undefined" ? Intl.DateTimeFormat().resolvedOptions().timeZone ?? "UTC" : "UTC";
}

export default function CronField(props: Props) {
  const value = useSignal(props.value);
  const zone = useSignal(typeof document === "undefined" ? "UTC" : viewerZone());
  const preview = useComputed(() => {
    const v = value.value.trim();
    if (!v) {
      return {
        error: props.required ? "Required, e.g. 0 2 * * 0 (Sunday 02:00)" : "",
        runs: [] as string[],
        words: "",
      };
    }
    const r = compileCron(v, props.scheduleZone);
    if (!r.ok) return { error: r.error, runs: [], words: "" };
    const fmt = new Intl.DateTimeFormat("en-GB", {
      timeZone: zone.value,
      weekday: "short",
      year: "numeric",
      month: "short",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
    });
    return { error: "", runs: r.cron.nextRuns(5).map((d) => fmt.format(d)), words: readCron(v) ?? "" };
  });
  const id = `f-${props.name}`;
  const error = value.value !== props.value ? preview.value.error : (props.error ?? "");
  return (
    <div class={error ? "field field--error cron-field" : "field cron-field"}>
      <label for={id}>{props.label}</label>
      <input
        id={id}
        name={props.name}
        value={value.value}
        required={props.required}
        autocomplete="off"
        spellcheck={false}
        aria-invalid={error ? "true" : undefined}
        onInput={(e) => (value.value = (e.target as HTMLInputElement).value)}
      />
      {error && <p class="field-error">{error}</p>}
      {!error && props.hint && !preview.value.runs.length && <p class="hint">{props.hint}</p>}
      {preview.value.runs.length > 0 && (
        <div class="cron-preview" data-testid={`cron-preview-${props.name}`}>
          <p class="hint">
            {preview.value.words && (
              <>
                <strong>{preview.value.words}</strong> ({props.scheduleZone}).{" "}
              </>
            )}
            Next runs in {zone.value}:
          </p>
          <ol>
            {preview.value.runs.map((r) => <li key={r}>{r}</li>)}
          </ol>
        </div>
      )}
    </div>
  );
}
