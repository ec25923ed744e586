/** Small server-rendered building blocks: headers, badges, tables, empty states, forms, pagers. */
import type { ComponentChildren } from "preact";
import type { FieldErrors } from "../domain/errors.ts";

export function PageHeader(props: { title: string; subtitle?: string; actions?: ComponentChildren }) {
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
}

/** A labelled input that shows its field error and keeps what was typed. */
export function Field(props: FieldProps) {
  const error = props.errors?.[props.name];
  const id = `f-${props.name}`;
  return (
    <div class={error ? "field field--error" : "field"}>
      <label for={id}>{props.label}</label>
      <input
        id={id}
        name={props.name}
        type={(props.type ?? "text") as "text"}
        value={props.type === "password" ? "" : props.value ?? ""}
        required={props.required}
        autocomplete={props.autocomplete}
        aria-invalid={error ? "true" : undefined}
        aria-describedby={error ? `${id}-error` : props.hint ? `${id}-hint` : undefined}
      />
      {props.hint && !error && <p class="hint" id={`${id}-hint`}>{props.hint}</p>}
      {error && <p class="field-error" id={`${id}-error`}>{error}</p>}
    </div>
  );
}

/** A labelled select. */
export function Select(props: {
  name: string;
  label: string;
  value?: string;
  options: Array<{ value: string; label: string }>;
  errors?: FieldErrors;
}) {
  const error = props.errors?.[props.name];
  const id = `f-${props.name}`;
  return (
    <div class={error ? "field field--error" : "field"}>
      <label for={id}>{props.label}</label>
      <select id={id} name={props.name} aria-invalid={error ? "true" : undefined}>
        {props.options.map((o) => (
          <option key={o.value} value={o.value} selected={o.value === props.value}>{o.label}</option>
        ))}
      </select>
      {error && <p class="field-error">{error}</p>}
    </div>
  );
}

/** The form-level error summary. */
export function FormErrors(props: { message?: string }) {
  return props.message ? <p class="form-error" role="alert">{props.message}</p> : null;
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

/** Formats an ISO time as `YYYY-MM-DD HH:MM UTC` (stable for operators across zones). */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  return iso.replace("T", " ").slice(0, 16) + " UTC";
}
