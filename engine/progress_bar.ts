/**
 * The command line's progress bar: one line on stderr, redrawn at most every 100 ms, while a backup or
 * restore runs in a terminal. `renderProgress` is a pure function of the state and the width, so it is
 * tested without a terminal; `ProgressBar` adds the throttle and the terminal control codes.
 */

/** What the bar shows. */
export interface ProgressState {
  /** What runs: "backup", "restore". */
  verb: string;
  files: number;
  bytes: number;
  /** Bytes of the whole run when known (images): the bar then shows a percentage. */
  totalBytes?: number;
  currentPath: string;
  elapsedMs: number;
}

/** Least time between two redraws. */
export const REDRAW_INTERVAL_MS = 100;

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** `n` bytes in binary units, one decimal from KiB on: "0 B", "1.5 KiB", "12.0 GiB". */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}

/** Columns a code point takes in a terminal: 2 for East Asian wide characters and emoji, else 1. */
export function charWidth(cp: number): number {
  return (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf && cp !== 0x303f) ||
      (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xfe30 && cp <= 0xfe4f) ||
      (cp >= 0xff00 && cp <= 0xff60) || (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1f64f) ||
      (cp >= 0x1f900 && cp <= 0x1f9ff) || (cp >= 0x20000 && cp <= 0x3fffd)
    ? 2
    : 1;
}

/** Columns `text` takes in a terminal (see `charWidth`). */
export function displayWidth(text: string): number {
  let w = 0;
  for (const c of text) w += charWidth(c.codePointAt(0)!);
  return w;
}

/**
 * `path` fit into `width` columns: control characters (a file name may hold escape codes) shown as "?",
 * and a path too long cut at its start behind "…", keeping its end (the file name).
 */
export function fitPath(path: string, width: number): string {
  // deno-lint-ignore no-control-regex
  const clean = path.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
  if (displayWidth(clean) <= width) return clean;
  if (width <= 0) return "";
  const chars = [...clean];
  let kept = "";
  let w = 1; // the "…"
  for (let i = chars.length - 1; i >= 0; i--) {
    const cw = charWidth(chars[i].codePointAt(0)!);
    if (w + cw > width) break;
    kept = chars[i] + kept;
    w += cw;
  }
  return "…" + kept;
}

/**
 * One line of at most `width` terminal columns: with a known total,
 * `backup  42% [########-----------]  1.2 GiB / 2.9 GiB  85.3 MiB/s  /dev/sdb`; without,
 * `restore  1,204 files  1.2 GiB  85.3 MiB/s  /home/a/report.pdf`. The path gets what room is left;
 * the bar shrinks first when the width is small.
 */
export function renderProgress(s: ProgressState, width: number): string {
  const rate = s.elapsedMs > 0 ? formatBytes(s.bytes / (s.elapsedMs / 1000)) + "/s" : "-";
  const parts: string[] = [s.verb];
  let barAt = -1;
  if (s.totalBytes !== undefined && s.totalBytes > 0) {
    const ratio = Math.min(1, s.bytes / s.totalBytes);
    parts.push(`${Math.floor(ratio * 100)}%`.padStart(4));
    barAt = parts.length;
    parts.push("");
    parts.push(`${formatBytes(s.bytes)} / ${formatBytes(s.totalBytes)}`);
  } else {
    parts.push(`${s.files.toLocaleString("en-US")} files`, formatBytes(s.bytes));
  }
  parts.push(rate);
  const fixed = parts.join("  ").length;
  if (barAt >= 0) {
    // The bar takes up to 30 columns, but leaves 20 for the path; it is left out below 5.
    const room = Math.min(30, width - fixed - 2 - 20);
    if (room >= 5) {
      const inner = room - 2;
      const ratio = Math.min(1, s.bytes / s.totalBytes!);
      const done = Math.floor(ratio * inner);
      parts[barAt] = `[${"#".repeat(done)}${"-".repeat(inner - done)}]`;
    } else {
      parts.splice(barAt, 1);
    }
  }
  const head = parts.join("  ");
  if (head.length >= width) return [...head].slice(0, Math.max(0, width)).join("");
  const room = width - head.length - 2;
  return room > 0 && s.currentPath ? `${head}  ${fitPath(s.currentPath, room)}` : head;
}

/** Options of `ProgressBar`. */
export interface ProgressBarOptions {
  /** Writes terminal output (default: stderr, synchronously). */
  write?: (text: string) => void;
  /** Terminal width in columns (default: the console's, else 80). */
  columns?: () => number;
  /** Milliseconds clock (default `performance.now`). */
  now?: () => number;
}

function consoleColumns(): number {
  try {
    // A pseudo-terminal may report 0 columns (no size set): then the usual 80.
    return Deno.consoleSize().columns || 80;
  } catch {
    return 80;
  }
}

/** A redrawn status line: `update` draws at most every `REDRAW_INTERVAL_MS`; `clear` erases it. */
export class ProgressBar {
  #write: (text: string) => void;
  #columns: () => number;
  #now: () => number;
  #start: number;
  #lastDraw = -Infinity;
  #drawn = false;

  constructor(readonly verb: string, options: ProgressBarOptions = {}) {
    const enc = new TextEncoder();
    this.#write = options.write ?? ((t) => void Deno.stderr.writeSync(enc.encode(t)));
    this.#columns = options.columns ?? consoleColumns;
    this.#now = options.now ?? (() => performance.now());
    this.#start = this.#now();
  }

  /** Records `p` and redraws if the last draw is at least `REDRAW_INTERVAL_MS` old. */
  update(p: { files: number; bytes: number; currentPath: string; totalBytes?: number }): void {
    const t = this.#now();
    if (t - this.#lastDraw < REDRAW_INTERVAL_MS) return;
    this.#lastDraw = t;
    // One column less than the width: writing the last column makes some terminals wrap.
    const line = renderProgress({ verb: this.verb, ...p, elapsedMs: t - this.#start }, this.#columns() - 1);
    this.#write(`\r${line}\x1b[K`);
    this.#drawn = true;
  }

  /** Erases the line (before the command prints its result or an error). */
  clear(): void {
    if (this.#drawn) this.#write("\r\x1b[K");
    this.#drawn = false;
  }
}

/**
 * A progress bar for `verb` on stderr when stderr is a terminal and the output is not JSON, else null:
 * piped or redirected output, and `--json`, stay free of control codes.
 */
export function terminalProgressBar(verb: string, json: boolean): ProgressBar | null {
  if (json || !Deno.stderr.isTerminal()) return null;
  return new ProgressBar(verb);
}
