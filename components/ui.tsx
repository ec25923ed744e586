/** Small server-rendered building blocks: headers, badges, tables, empty states, forms, pagers. */
import { type ComponentChildren, Fragment, type JSX } from "preact";
import { useContext } from "preact/hooks";
import { absoluteTime, NowContext, Time } from "./time.tsx";
import type { FieldErrors } from "../domain/errors.ts";

export function PageHeader(
  props: { title: string; subtitle?: ComponentChildren; actions?: ComponentChildren },
) {
  return (
    <div class="page-header">
      <div>
        <h1>{props.title}</h1>
        {props.subtitle && <p class="subtitle">{props.subtitle}</p>}
      </div>
      {props.actions && <div class="actions">{props.actions}</div>}
    </div>
  );
}

export type Tone = "ok" | "warn" | "bad" | "info" | "muted";

export function Badge(props: { tone: Tone; children: ComponentChildren }) {
  return <span class={`badge badge--${props.tone}`}>{props.children}</span>;
}

/**
 * A long id shortened to its end (ULIDs differ there), the whole id on hover, for screen readers and
 * when copied (the text is all there; CSS only hides its start).
 */
export function ShortId(props: { id: string }) {
  return <code class="id-short" title={props.id}>{props.id}</code>;
}

export function EmptyState(props: { title: string; children?: ComponentChildren }) {
  return (
    <div class="empty">
      <p class="empty-title">{props.title}</p>
      {props.children && <div class="empty-body">{props.children}</div>}
    </div>
  );
}

/** A hidden CSRF field for every POST form. */
export function Csrf(props: { token: string }) {
  return <input type="hidden" name="_csrf" value={props.token} />;
}

interface FieldProps {
  name: string;
  label: string;
  value?: string;
  type?: "text" | "email" | "password" | "number" | "url" | "search" | "date";
  errors?: FieldErrors;
  hint?: string;
  required?: boolean;
  autocomplete?: string;
  placeholder?: string;
}

/**
 * The frame of a labelled control: the label, the control, then its hint (when there is no error) or its
 * error. With `described`, the hint and the error carry the ids the control's aria-describedby names.
 */
export function FieldFrame(props: {
  id: string;
  label: string;
  error?: string;
  hint?: string;
  described?: boolean;
  children: ComponentChildren;
}) {
  const { id, error, hint, described } = props;
  return (
    <div class={error ? "field field--error" : "field"}>
      <label for={id}>{props.label}</label>
      {props.children}
      {hint && !error &&
        (described ? <p class="hint" id={`${id}-hint`}>{hint}</p> : <p class="hint">{hint}</p>)}
      {error && (described
        ? <p class="field-error" id={`${id}-error`}>{error}</p>
        : <p class="field-error">{error}</p>)}
    </div>
  );
}

/** A labelled input that shows its field error and keeps what was typed. */
export function Field(props: FieldProps) {
  const error = props.errors?.[props.name];
  const id = `f-${props.name}`;
  return (
    <FieldFrame id={id} label={props.label} error={error} hint={props.hint} described>
      <input
        id={id}
        name={props.name}
        type={(props.type ?? "text") as "text"}
        value={props.type === "password" ? "" : props.value ?? ""}
        required={props.required}
        autocomplete={props.autocomplete}
        placeholder={props.placeholder}
        aria-invalid={error ? "true" : undefined}
        aria-describedby={error ? `${id}-error` : props.hint ? `${id}-hint` : undefined}
      />
    </FieldFrame>
  );
}

/** A labelled select; `blank` labels a first option with the empty value ("Choose …", "None"). */
export function Select(props: {
  name: string;
  label: string;
  value?: string;
  blank?: string;
  options: Array<{ value: string; label: string }>;
  errors?: FieldErrors;
}) {
  const options = props.blank === undefined
    ? props.options
    : [{ value: "", label: props.blank }, ...props.options];
  const error = props.errors?.[props.name];
  const id = `f-${props.name}`;
  return (
    <FieldFrame id={id} label={props.label} error={error}>
      <select id={id} name={props.name} aria-invalid={error ? "true" : undefined}>
        {options.map((o) => (
          <option key={o.value} value={o.value} selected={o.value === props.value}>{o.label}</option>
        ))}
      </select>
    </FieldFrame>
  );
}

/** A form's buttons: the primary submit button `submit`, and Cancel back to `cancel` when given. */
export function FormActions(props: { submit: string; cancel?: string }) {
  return (
    <div class="form-actions">
      <button type="submit" class="btn btn--primary">{props.submit}</button>
      {props.cancel !== undefined && <a class="btn btn--ghost" href={props.cancel}>Cancel</a>}
    </div>
  );
}

/**
 * The form of a destructive action's confirmation page (a delete, a removal, a secret replaced): what it
 * does (`children`), the CSRF field, the danger button that POSTs to `action`, and Cancel back to `cancel`.
 */
export function ConfirmForm(
  props: { action: string; cancel: string; csrf: string; label: string; children?: ComponentChildren },
) {
  return (
    <form method="post" action={props.action} class="form">
      {props.children}
      <Csrf token={props.csrf} />
      <div class="form-actions">
        <button type="submit" class="btn btn--danger">{props.label}</button>
        <a class="btn btn--ghost" href={props.cancel}>Cancel</a>
      </div>
    </form>
  );
}

/**
 * A labelled checkbox posting `on` when ticked. The label is escaped at request time, which leaves an
 * apostrophe as it is where a page's compiled JSX writes `&#39;`: such labels stay written out in their page.
 */
export function Checkbox(props: { name: string; checked: boolean; label: string }) {
  return (
    <label class="choice">
      <input type="checkbox" name={props.name} value="on" checked={props.checked} /> {props.label}
    </label>
  );
}

/** The form-level error summary. */
export function FormErrors(props: { message?: string }) {
  return props.message ? <p class="form-error" role="alert">{props.message}</p> : null;
}

/**
 * A table in its scrolling wrapper: the header cells `heads` (a label, or a cell such as a `SortHeader`),
 * then the rows (`children`). The table's class, and its `data-testid` and `id` when given, are the table
 * element's own attributes.
 */
export function DataTable(props: {
  class: string;
  testid?: string;
  id?: string;
  heads: ComponentChildren[];
  children: ComponentChildren;
}) {
  // Only the attributes given: the table tag reads as the pages wrote it by hand.
  const attrs: Record<string, string> = { class: props.class };
  if (props.testid) attrs["data-testid"] = props.testid;
  if (props.id) attrs.id = props.id;
  return (
    <div class="table-wrap" tabIndex={0}>
      <table {...attrs}>
        <thead>
          <tr>
            {props.heads.map((h, i) =>
              typeof h === "string"
                ? (
                  // A keyed fragment: the <th> stays a plain precompiled template.
                  <Fragment key={i}>
                    <th>{h}</th>
                  </Fragment>
                )
                : h
            )}
          </tr>
        </thead>
        <tbody>{props.children}</tbody>
      </table>
    </div>
  );
}

/** Offset pagination for server lists: "Showing a–b of n" plus previous/next links keeping the query. */
export function Pager(
  props: { total: number; offset: number; limit: number; query: Record<string, string> },
) {
  const { total, offset, limit } = props;
  if (total === 0) return null;
  const link = (o: number) => "?" + new URLSearchParams({ ...props.query, offset: String(o) }).toString();
  return (
    <nav class="pager" aria-label="Pagination">
      <span>
        Showing {offset + 1}–{Math.min(offset + limit, total)} of {total}
      </span>
      {offset > 0 && <a href={link(Math.max(0, offset - limit))}>← Previous</a>}
      {offset + limit < total && <a href={link(offset + limit)}>Next →</a>}
    </nav>
  );
}

/** A sortable column header link. */
export function SortHeader(
  props: { label: string; field: string; sort: string; query: Record<string, string> },
) {
  const active = props.sort.replace(/^-/, "") === props.field;
  const desc = props.sort.startsWith("-");
  const next = active && !desc ? `-${props.field}` : props.field;
  const href = "?" + new URLSearchParams({ ...props.query, sort: next, offset: "0" }).toString();
  return (
    <th aria-sort={active ? (desc ? "descending" : "ascending") : undefined}>
      <a href={href}>{props.label}{active ? (desc ? " ↓" : " ↑") : ""}</a>
    </th>
  );
}

/**
 * Shows an ISO time the one way times are shown: relative and absolute ("6 min ago · 05:05 UTC"), the
 * full time on hover (components/time.tsx; "now" is the request's clock). For text, use `timeText`.
 */
export function formatTime(iso: string | null | undefined): JSX.Element {
  return <Time iso={iso} />;
}

const UNITS = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];

/** Bytes in binary units with one decimal (`1.5 TB`). */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "—";
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${bytes < 0 ? "-" : ""}${unit === 0 ? value : value.toFixed(1)} ${UNITS[unit]}`;
}

/** "3 d 4 h" / "5 h 12 min" / "40 min" */
export function formatDuration(ms: number): string {
  const minutes = Math.floor(ms / 60_000);
  const d = Math.floor(minutes / 1440);
  const h = Math.floor((minutes % 1440) / 60);
  const m = minutes % 60;
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  return `${m} min`;
}

/** A time that may never have happened (a last heartbeat): the `Time` at `now`, or "never". */
export function formatAge(iso: string | null | undefined, now: Date): JSX.Element {
  return <Time iso={iso} now={now} empty="never" />;
}

/**
 * A small inline SVG line of values (0–max), server-rendered; no script, no inline style. With `from`
 * and `to` (ISO times of the first and last value) the time axis is labelled under the line; `stale`
 * marks values that are no longer current (their source went silent).
 */
export function Sparkline(
  props: {
    values: number[];
    max?: number;
    label: string;
    width?: number;
    height?: number;
    from?: string;
    to?: string;
    stale?: boolean;
  },
) {
  const contextNow = useContext(NowContext);
  const now = contextNow ?? new Date();
  const width = props.width ?? 160;
  const height = props.height ?? 32;
  const values = props.values;
  const max = props.max ?? Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) =>
    `${(i * step).toFixed(1)},${(height - (v / max) * (height - 2) - 1).toFixed(1)}`
  );
  const last = values.at(-1);
  const axis = (iso: string) => absoluteTime(new Date(iso), now);
  return (
    <figure class={props.stale ? "spark spark--stale" : "spark"}>
      <svg
        width={width}
        height={height}
        viewBox={`0 0 ${width} ${height}`}
        role="img"
        aria-label={props.from && props.to
          ? `${props.label} from ${axis(props.from)} to ${axis(props.to)}`
          : props.label}
      >
        {values.length > 1
          ? <polyline points={points.join(" ")} fill="none" stroke="currentColor" stroke-width="1.5" />
          : (
            <line
              x1="0"
              y1={height - 1}
              x2={width}
              y2={height - 1}
              stroke="currentColor"
              stroke-dasharray="3 3"
            />
          )}
      </svg>
      {props.from && props.to && (
        <div class="spark-axis" aria-hidden="true">
          <span>{axis(props.from)}</span>
          <span>{axis(props.to)}</span>
        </div>
      )}
      <figcaption>
        {props.label} {last !== undefined
          ? (
            <>
              {props.stale ? "last reported" : "now"} <strong>{Math.round(last * 10) / 10}</strong>
            </>
          )
          : "no data"}
      </figcaption>
    </figure>
  );
}
