/**
 * Client helpers shared by the Restore islands of one page. The selection is the paths picked in
 * Browse and Search, which the Restore Files form submits: the islands of a page hydrate from one
 * bundle, so they share this module. The server never writes it (only event handlers and client-only
 * initialisers do), so every server render sees an empty selection.
 */
import { signal } from "@preact/signals";

/** Selected paths, in the order they were picked. */
export const selection = signal<string[]>([]);

/** Adds `path` when absent, removes it when present. */
export function toggleSelected(path: string): void {
  selection.value = selection.value.includes(path)
    ? selection.value.filter((p) => p !== path)
    : [...selection.value, path];
}

/** Sends a JSON request with the page's CSRF token. Throws if the server refuses, with its message. */
export async function requestJson<T>(method: "GET" | "POST", url: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (method === "POST") {
    headers["content-type"] = "application/json";
    headers["x-csrf-token"] = document.querySelector<HTMLMetaElement>("meta[name=csrf-token]")?.content ?? "";
  }
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json().catch(() => null);
  if (!res.ok) throw new Error(json?.error?.message ?? `Request failed: ${method} ${url}`);
  return json as T;
}

/**
 * GETs the state at `url` every second and hands it to `onState` until it is no longer pending, or
 * until `stale()` says the island moved on (another folder, a new search, unmounted). Throws what
 * `requestJson` throws.
 */
export async function pollState<T extends { status: string }>(
  url: string,
  stale: () => boolean,
  onState: (state: T) => void,
): Promise<void> {
  while (!stale()) {
    const next = await requestJson<T>("GET", url);
    if (stale()) return;
    onState(next);
    if (next.status !== "pending") return;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** The folders from the root down to `path` (POSIX or Windows), for a breadcrumb. */
export function crumbs(path: string): Array<{ name: string; path: string }> {
  const windows = /^[A-Za-z]:/.test(path);
  const sep = windows ? "\\" : "/";
  const parts = path.split(/[\\/]/).filter(Boolean);
  const out = windows ? [] : [{ name: "/", path: "/" }];
  parts.forEach((name, i) => {
    const joined = parts.slice(0, i + 1).join(sep);
    out.push({ name, path: windows ? (i === 0 ? joined + sep : joined) : sep + joined });
  });
  return out;
}
