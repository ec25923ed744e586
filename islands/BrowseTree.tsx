/**
 * Browse a restore point's file tree. Each folder is a `browse` job the BES answers; the island asks
 * for it, polls until the listing is ready and keeps every listing it has seen, so going back is
 * instant (the server keeps them per restore point and path as well). A large folder is paged
 * (LIST_PAGE_SIZE entries a page): the page links are plain `?path=…&page=…` links, which the island
 * follows without reloading. Checkboxes add files and folders to the shared selection of the Restore
 * Files form. Without JavaScript the form POSTs and the page shows the listing of `?path=` (and `?page=`)
 * once it is ready. A file row's History button asks for the file's version history (routes/file_history.tsx).
 */
import { useSignal } from "@preact/signals";
import { useEffect, useRef } from "preact/hooks";
import { Csrf, formatBytes, formatTime } from "../components/ui.tsx";
import type { BrowseState, TreeEntry } from "../domain/restore_browse.ts";
import { crumbs, pollState, requestJson, selection, toggleSelected } from "./restore_client.ts";

export interface Props {
  restorePointId: string;
  csrfToken: string;
  path: string;
  /** What the user typed in the path field when the server refused it (kept in the field). */
  typed?: string;
  /** The state of `path` when the page was rendered (a cached listing shows at once). */
  initial: BrowseState | null;
  /**
   * The point's host, when its files have a version history (a file backup on a host): each file row gets
   * a "History" button that submits the page's `file-history` form with the file's path.
   */
  historyHostId?: string | null;
}

export default function BrowseTree(props: Props) {
  const base = `/api/v1/restore-points/${props.restorePointId}/browse`;
  const path = useSignal(props.path);
  const typed = useSignal(props.typed ?? props.path);
  const state = useSignal<BrowseState | null>(props.initial);
  const error = useSignal("");
  const seen = useRef(new Map<string, BrowseState>());
  const generation = useRef(0);
  /** Listings seen, by folder and page. */
  const seenKey = (target: string, page: number) => `${page}\u0000${target}`;

  /** Follows the state of `target` until it settles, unless the island moved on (`gen`). */
  const poll = async (target: string, gen: number) => {
    const url = `${base}?path=${encodeURIComponent(target)}`;
    await pollState<BrowseState>(url, () => gen !== generation.current, (next) => {
      state.value = next;
      if (next.status === "ready") seen.current.set(seenKey(target, next.page ?? 0), next);
    });
  };

  const open = async (target: string) => {
    const gen = ++generation.current;
    path.value = typed.value = target;
    error.value = "";
    const cached = seen.current.get(seenKey(target, 0));
    state.value = cached ?? null;
    if (cached) return;
    try {
      const next = await requestJson<BrowseState>("POST", `${base}?path=${encodeURIComponent(target)}`);
      if (gen !== generation.current) return;
      path.value = typed.value = next.path;
      state.value = next;
      if (next.status === "ready") seen.current.set(seenKey(next.path, next.page ?? 0), next);
      else if (next.status === "pending") await poll(next.path, gen);
    } catch (e) {
      if (gen === generation.current) error.value = (e as Error).message;
    }
  };

  /** Another page of the listing shown (already ready on the server). */
  const openPage = async (target: string, page: number) => {
    const gen = ++generation.current;
    error.value = "";
    const cached = seen.current.get(seenKey(target, page));
    if (cached) {
      state.value = cached;
      return;
    }
    try {
      const url = `${base}?path=${encodeURIComponent(target)}&page=${page}`;
      const next = await requestJson<BrowseState>("GET", url);
      if (gen !== generation.current) return;
      state.value = next;
      if (next.status === "ready") seen.current.set(seenKey(target, next.page ?? page), next);
    } catch (e) {
      if (gen === generation.current) error.value = (e as Error).message;
    }
  };

  useEffect(() => {
    const s = props.initial;
    if (s?.status === "ready") seen.current.set(seenKey(s.path, s.page ?? 0), s);
    if (s?.status === "pending") {
      const gen = generation.current;
      poll(s.path, gen).catch((e) => gen === generation.current && (error.value = (e as Error).message));
    }
    return () => void generation.current++;
  }, []);

  const link = (target: string) => `?path=${encodeURIComponent(target)}#browse`;
  const pageLink = (target: string, page: number) =>
    `?path=${encodeURIComponent(target)}${page ? `&page=${page}` : ""}#browse`;
  const go = (target: string) => (e: Event) => {
    e.preventDefault();
    open(target);
  };
  const goPage = (target: string, page: number) => (e: Event) => {
    e.preventDefault();
    openPage(target, page);
  };
  const s = state.value;
  const entries: TreeEntry[] = s?.status === "ready" ? s.entries ?? [] : [];
  const page = s?.page ?? 0;
  const pages = s?.pages ?? 1;
  const offset = s?.offset ?? 0;
  const kept = s?.kept ?? entries.length;
  const total = s?.total ?? kept;
  return (
    <div class="browse" data-testid="browse">
      <form
        method="post"
        action={`/backup/restore/points/${props.restorePointId}/browse`}
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          open(typed.value.trim() || "/");
        }}
      >
        <Csrf token={props.csrfToken} />
        <label for="browse-path">Path</label>{" "}
        <input
          id="browse-path"
          name="path"
          value={typed.value}
          onInput={(e) => typed.value = (e.target as HTMLInputElement).value}
        />{" "}
        <button type="submit" class="btn">Browse</button>
      </form>
      <nav class="crumbs" aria-label="Folder">
        {crumbs(path.value).map((c) => <a key={c.path} href={link(c.path)} onClick={go(c.path)}>{c.name}</a>)}
      </nav>
      <div aria-live="polite">
        {error.value && <p class="form-error" role="alert">{error.value}</p>}
        {!s && !error.value && <p class="muted">Not listed yet: press Browse to ask the BES.</p>}
        {s?.status === "pending" && (
          <p class="muted" data-testid="browse-pending">Waiting for the BES to list {s.path}…</p>
        )}
        {s?.status === "failed" && (
          <p class="form-error" role="alert">The BES could not list {s.path}: {s.error}</p>
        )}
        {s?.status === "ready" && entries.length === 0 && <p class="muted">This folder is empty.</p>}
        {s?.status === "ready" && s.truncated && (
          <p class="hint" data-testid="browse-truncated">
            The BES found {total.toLocaleString("en-US")} entries in this folder; the first{" "}
            {kept.toLocaleString("en-US")} are listed. Use Search to find the others.
          </p>
        )}
      </div>
      {s?.status === "ready" && kept > 0 && (
        <nav class="pager" aria-label="Folder pages" data-testid="browse-pager">
          <span data-testid="browse-range">
            Entries {(offset + 1).toLocaleString("en-US")}–{(offset + entries.length).toLocaleString("en-US")}
            {" "}
            of {kept.toLocaleString("en-US")}
            {pages > 1 ? ` (page ${page + 1} of ${pages})` : ""}
          </span>
          {page > 0 && (
            <a href={pageLink(s.path, page - 1)} onClick={goPage(s.path, page - 1)} data-testid="browse-prev">
              ← Previous
            </a>
          )}
          {page + 1 < pages && (
            <a href={pageLink(s.path, page + 1)} onClick={goPage(s.path, page + 1)} data-testid="browse-next">
              Next →
            </a>
          )}
        </nav>
      )}
      {entries.length > 0 && (
        <div class="table-wrap">
          <table class="table table--cards table--compact" data-testid="browse-entries">
            <thead>
              <tr>
                <th>Select</th>
                <th>Name</th>
                <th>Size</th>
                <th>Modified</th>
                {props.historyHostId && <th>History</th>}
              </tr>
            </thead>
            <tbody>
              {entries.map((entry) => (
                <tr key={entry.path} data-path={entry.path}>
                  <td data-label="Select">
                    <input
                      type="checkbox"
                      name="paths"
                      form="restore-files"
                      value={entry.path}
                      aria-label={`Select ${entry.path}`}
                      checked={selection.value.includes(entry.path)}
                      onChange={() => toggleSelected(entry.path)}
                    />
                  </td>
                  <td data-label="Name">
                    {entry.type === "dir"
                      ? <a href={link(entry.path)} onClick={go(entry.path)} class="folder">{entry.name}/</a>
                      : <span>{entry.name}</span>}
                  </td>
                  <td data-label="Size" class="nowrap">
                    {entry.type === "dir" ? "—" : formatBytes(entry.size)}
                  </td>
                  <td data-label="Modified" class="nowrap">{formatTime(entry.modifiedAt)}</td>
                  {props.historyHostId && (
                    <td data-label="History">
                      {entry.type === "file" && (
                        <button
                          type="submit"
                          form="file-history"
                          name="path"
                          value={entry.path}
                          class="btn btn--small btn--ghost"
                          aria-label={`Version history of ${entry.path}`}
                        >
                          History
                        </button>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
