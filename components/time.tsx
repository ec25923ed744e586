/**
 * One way to show a time everywhere: relative and absolute ("6 min ago · 05:05 UTC"), the full time on
 * hover, the ISO value only in the machine-readable `datetime`. Pages get "now" from the request's clock
 * through `NowContext` (routes/render.tsx provides it), so tests with a fixed clock render fixed text.
 */
import { createContext } from "preact";
import { useContext } from "preact/hooks";

/** The request's "now"; null outside a render that provides it (then the wall clock is used). */
export const NowContext = createContext<Date | null>(null);

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** "just now", "6 min ago", "3 h ago", "2 d ago", "in 5 min" (whole units, rounded down). */
export function relativeTime(at: Date, now: Date): string {
  const delta = now.getTime() - at.getTime();
  const abs = Math.abs(delta);
  if (abs < MINUTE) return delta >= 0 ? "just now" : "in less than a minute";
  const amount = abs < HOUR
    ? `${Math.floor(abs / MINUTE)} min`
    : abs < DAY
    ? `${Math.floor(abs / HOUR)} h`
    : abs < 365 * DAY
    ? `${Math.floor(abs / DAY)} d`
    : `${Math.floor(abs / (365 * DAY))} y`;
  return delta >= 0 ? `${amount} ago` : `in ${amount}`;
}

/** "05:05 UTC" on the same UTC day as `now`, otherwise "2026-03-12 05:05 UTC". */
export function absoluteTime(at: Date, now: Date): string {
  const iso = at.toISOString();
  const sameDay = iso.slice(0, 10) === now.toISOString().slice(0, 10);
  return `${sameDay ? iso.slice(11, 16) : `${iso.slice(0, 10)} ${iso.slice(11, 16)}`} UTC`;
}

/**
 * The words of a time at `now`: `text` ("6 min ago · 05:05 UTC") and `full` ("2026-03-12 05:05:33 UTC",
 * for hover); null for a missing or unparseable time.
 */
export function describeTime(
  iso: string | null | undefined,
  now: Date,
): { text: string; full: string } | null {
  if (!iso) return null;
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms)) return null;
  const at = new Date(ms);
  const full = `${at.toISOString().slice(0, 10)} ${at.toISOString().slice(11, 19)} UTC`;
  return { text: `${relativeTime(at, now)} · ${absoluteTime(at, now)}`, full };
}

/** "2026-03-12 05:05 UTC": for text that cannot be relative (a page's `<title>`, an `<option>`). */
export function dateTimeText(iso: string | null | undefined, empty = "—"): string {
  const ms = iso ? Date.parse(iso) : NaN;
  if (!Number.isFinite(ms)) return empty;
  const s = new Date(ms).toISOString();
  return `${s.slice(0, 10)} ${s.slice(11, 16)} UTC`;
}

/** A time as plain text (for titles and sentences built as strings); `empty` when there is none. */
export function timeText(iso: string | null | undefined, now: Date, empty = "—"): string {
  return describeTime(iso, now)?.text ?? empty;
}

/** A `<time>` showing `iso` relative and absolute; `empty` ("—" unless given) when there is none. */
export function Time(props: { iso: string | null | undefined; now?: Date; empty?: string }) {
  const contextNow = useContext(NowContext);
  const now = props.now ?? contextNow ?? new Date();
  const words = describeTime(props.iso, now);
  if (!words) return <>{props.empty ?? "—"}</>;
  return (
    <time datetime={new Date(Date.parse(props.iso!)).toISOString()} title={words.full}>{words.text}</time>
  );
}
