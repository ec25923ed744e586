/**
 * Restore path rules: normalizing absolute POSIX and Windows paths, the path list of a file restore
 * (1–10,000 paths, deduplicated), parent and child paths. Depends on zod only, so restore, drills and
 * file history share it without an import cycle.
 */
import { z } from "zod";

/** The most paths one file restore may select (the guide's limit). */
export const MAX_RESTORE_PATHS = 10_000;
/** The longest path accepted anywhere in restore. */
export const MAX_PATH_LENGTH = 4096;

const WINDOWS_ABSOLUTE = /^[A-Za-z]:([\\/]|$)/;
const WINDOWS_FORBIDDEN = /[<>:"|?*]/;

/** The result of normalizing one path: the path, or why it is refused. */
export type NormalizedPath =
  | { ok: true; path: string; windows: boolean }
  | { ok: false; message: string };

/**
 * Normalizes an absolute POSIX (`/srv/data`) or Windows (`C:\Users`, `c:/Users`) path: repeated
 * separators and `.` segments collapse, a trailing separator goes (except at the root), Windows paths get
 * an upper-case drive and backslashes. Refuses relative paths, `..` segments, NUL and other control
 * characters, and paths over 4096 characters.
 */
export function normalizeRestorePath(raw: string): NormalizedPath {
  if (raw.length === 0) return { ok: false, message: "must not be empty" };
  if (raw.length > MAX_PATH_LENGTH) {
    return { ok: false, message: `must be at most ${MAX_PATH_LENGTH} characters` };
  }
  if (raw.includes("\0")) return { ok: false, message: "must not contain NUL characters" };
  if (/\p{Cc}/u.test(raw)) return { ok: false, message: "must not contain control characters" };
  if (WINDOWS_ABSOLUTE.test(raw)) {
    const segments = raw.slice(2).split(/[\\/]+/).filter((s) => s !== "" && s !== ".");
    // Windows drops trailing dots and spaces from a segment, so "..", ". ." and "... " all climb.
    if (segments.some((s) => /^[. ]+$/.test(s))) {
      return { ok: false, message: 'must not contain ".." segments' };
    }
    if (segments.some((s) => WINDOWS_FORBIDDEN.test(s))) {
      return { ok: false, message: 'must not contain < > : " | ? * in a Windows path' };
    }
    return { ok: true, path: `${raw[0].toUpperCase()}:\\${segments.join("\\")}`, windows: true };
  }
  if (!raw.startsWith("/")) return { ok: false, message: "must be an absolute path (/… or C:\\…)" };
  const segments = raw.split("/").filter((s) => s !== "" && s !== ".");
  if (segments.includes("..")) return { ok: false, message: 'must not contain ".." segments' };
  return { ok: true, path: `/${segments.join("/")}`, windows: false };
}

/** An absolute POSIX or Windows path, normalized (see `normalizeRestorePath`). */
export const RestorePath: z.ZodType<string, string> = z.string({ error: "must be a path" })
  .max(MAX_PATH_LENGTH, `must be at most ${MAX_PATH_LENGTH} characters`)
  .transform((value, ctx) => {
    const result = normalizeRestorePath(value);
    if (!result.ok) {
      ctx.addIssue({ code: "custom", message: result.message });
      return z.NEVER;
    }
    return result.path;
  });

/** The folders above a normalized path, nearest last (none for a root). */
function ancestors(path: string, windows: boolean): string[] {
  const sep = windows ? "\\" : "/";
  const root = windows ? path.slice(0, 3) : "/";
  if (path === root) return [];
  const parts = path.slice(root.length).split(sep);
  const out = [root];
  for (let i = 1; i < parts.length; i++) out.push(root + parts.slice(0, i).join(sep));
  return out;
}

/**
 * Drops duplicates and every path that lies under another selected path (the folder restores it),
 * keeping the input order. Windows paths compare case-insensitively.
 */
export function dedupePaths(paths: string[], windows: boolean): string[] {
  const keyOf = (p: string) => windows ? p.toLowerCase() : p;
  const selected = new Set(paths.map(keyOf));
  const kept = new Set<string>();
  const out: string[] = [];
  for (const path of paths) {
    const key = keyOf(path);
    if (kept.has(key)) continue;
    if (ancestors(key, windows).some((a) => selected.has(a))) continue;
    kept.add(key);
    out.push(path);
  }
  return out;
}

/** A short, printable preview of a user-supplied path for an error message. */
function preview(raw: string): string {
  // deno-lint-ignore no-control-regex
  const clean = raw.replace(/[\u0000-\u001f\u007f]/g, "?");
  return clean.length > 60 ? `${clean.slice(0, 57)}…` : clean;
}

/** 1–10,000 absolute paths, each normalized, deduplicated (a path under a selected folder is dropped too). */
export const PathList: z.ZodType<string[], string[]> = z.array(z.string({ error: "must be a path" }), {
  error: "must be a list of paths",
})
  .min(1, "select at least one file or folder")
  .max(MAX_RESTORE_PATHS, `must be at most ${MAX_RESTORE_PATHS.toLocaleString("en-US")} paths`)
  .transform((raw, ctx) => {
    const normalized: string[] = [];
    let windows: boolean | null = null;
    for (const [i, value] of raw.entries()) {
      const result = normalizeRestorePath(value);
      if (!result.ok) {
        ctx.addIssue({
          code: "custom",
          path: [i],
          message: `path ${i + 1}${value ? ` (${preview(value)})` : ""} ${result.message}`,
        });
        return z.NEVER;
      }
      if (windows !== null && windows !== result.windows) {
        ctx.addIssue({ code: "custom", path: [i], message: "must not mix Windows and POSIX paths" });
        return z.NEVER;
      }
      windows = result.windows;
      normalized.push(result.path);
    }
    return dedupePaths(normalized, windows ?? false);
  });

/** The parent folder of a normalized path ("/" and "C:\" are their own parents). */
export function parentPath(path: string): string {
  const windows = WINDOWS_ABSOLUTE.test(path);
  const up = ancestors(path, windows);
  return up.length ? up[up.length - 1] : path;
}

/** A child path of a normalized folder. */
export function joinPath(folder: string, name: string): string {
  const sep = WINDOWS_ABSOLUTE.test(folder) ? "\\" : "/";
  return folder.endsWith(sep) ? folder + name : `${folder}${sep}${name}`;
}

/**
 * The path style of a host from the OS its agent reports (`Host.os`): the agent sends `/etc/os-release`'s
 * PRETTY_NAME on Linux ("Debian GNU/Linux 12"), else `<Deno.build.os> <release>` ("windows 10.0.22631",
 * "darwin 23.1.0"). Windows hosts take `C:\…` paths; every other OS takes POSIX paths.
 */
export function hostPathStyle(os: string): "windows" | "posix" {
  return /\bwindows\b|\bwin(32|64)\b/i.test(os) ? "windows" : "posix";
}

/**
 * Why a normalized absolute path cannot be used on a host of `os` (a Windows path on a POSIX host or the
 * reverse), or null when it can.
 */
export function pathMismatchForHost(path: string, os: string, hostname: string): string | null {
  const windowsPath = WINDOWS_ABSOLUTE.test(path);
  const style = hostPathStyle(os);
  if (style === "windows" && !windowsPath) {
    return `must be a Windows path (C:\\…): the agent host ${hostname} runs ${os}`;
  }
  if (style === "posix" && windowsPath) {
    return `must be a POSIX path (/…): the agent host ${hostname} runs ${os}, not Windows`;
  }
  return null;
}
