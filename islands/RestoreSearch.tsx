/**
 * Search a restore point by name or glob: the island queues a `search` job on the BES, polls it and
 * lists the matches (path, size, modification time) with checkboxes that add them to the shared
 * selection of the Restore Files form. Without JavaScript the form POSTs and the page shows the search
 * named by `?searchId=`.
 */
import { useSignal } from "@preact/signals";
import { useEffect, useRef } from "preact/hooks";
import { Csrf, formatBytes, formatTime } from "../components/ui.tsx";
import type { SearchState } from "../domain/restore_browse.ts";
import { pollState, requestJson, selection, toggleSelected } from "./restore_client.ts";

export interface Props {
  restorePointId: string;
  csrfToken: string;
  /** The search named in the page's URL, if any. */
  initial: SearchState | null;
  /** What the user typed when the server refused the search (kept in the field). */
  query?: string;
}

export default function RestoreSearch(props: Props) {
  const query = useSignal(props.query ?? props.initial?.query ?? "");
  const state = useSignal<SearchState | null>(props.initial);
  const error = useSignal("");
  const generation = useRef(0);

  const poll = (id: string, gen: number) =>
    pollState<SearchState>(`/api/v1/searches/${id}`, () => gen !== generation.current, (next) => {
      state.value = next;
    });

  const submit = async (e: Event) => {
    e.preventDefault();
    const gen = ++generation.current;
    error.value = "";
    state.value = null;
    try {
      const url = `/api/v1/restore-points/${props.restorePointId}/search`;
      const next = await requestJson<SearchState>("POST", url, { query: query.value.trim() });
      if (gen !== generation.current) return;
      state.value = next;
      if (next.status === "pending") await poll(next.id, gen);
    } catch (err) {
      if (gen === generation.current) error.value = (err as Error).message;
    }
  };

  useEffect(() => {
    const gen = generation.current;
    if (props.initial?.status === "pending") {
      poll(props.initial.id, gen).catch((e) =>
        gen === generation.current && (error.value = (e as Error).message)
      );
    }
    return () => void generation.current++;
  }, []);

  /** Another page of the matches (the search is ready on the server). */
  const openPage = async (id: string, page: number) => {
    const gen = ++generation.current;
    error.value = "";
    try {
      const next = await requestJson<SearchState>("GET", `/api/v1/searches/${id}?page=${page}`);
      if (gen === generation.current) state.value = next;
    } catch (err) {
      if (gen === generation.current) error.value = (err as Error).message;
    }
  };

  const s = state.value;
  const matches = s?.status === "ready" ? s.matches ?? [] : [];
  const kept = s?.kept ?? matches.length;
  const total = s?.total ?? kept;
  const page = s?.page ?? 0;
  const pages = s?.pages ?? 1;
  const offset = s?.offset ?? 0;
  const pageLink = (id: string, p: number) =>
    `?${new URLSearchParams({ searchId: id, ...(p ? { searchPage: String(p) } : {}) })}#search`;
  const goPage = (id: string, p: number) => (e: Event) => {
    e.preventDefault();
    openPage(id, p);
  };
  return (
    <div class="restore-search" data-testid="search">
      <form
        method="post"
        action={`/backup/restore/points/${props.restorePointId}/search`}
        class="inline-form"
        onSubmit={submit}
      >
        <Csrf token={props.csrfToken} />
        <label for="search-query">Name or glob</label>{" "}
        <input
          id="search-query"
          name="query"
          type="search"
          required
          maxLength={200}
          placeholder="report*.pdf"
          value={query.value}
          onInput={(e) => query.value = (e.target as HTMLInputElement).value}
        />{" "}
        <button type="submit" class="btn">Search</button>
      </form>
      <div aria-live="polite">
        {error.value && <p class="form-error" role="alert">{error.value}</p>}
        {s?.status === "pending" && <p class="muted">Searching for “{s.query}”…</p>}
        {s?.status === "failed" && <p class="form-error" role="alert">The search failed: {s.error}</p>}
        {s?.status === "ready" && (
          <p class="muted" data-testid="search-summary">
            {kept.toLocaleString("en-US")} match{kept === 1 ? "" : "es"} for “{s.query}”
            {s.truncated
              ? ` (the BES found ${
                total > kept ? total.toLocaleString("en-US") : "more"
              } and stopped at this many; narrow the search)`
              : ""}.
          </p>
        )}
      </div>
      {s?.status === "ready" && pages > 1 && (
        <nav class="pager" aria-label="Search result pages" data-testid="search-pager">
          <span>
            Matches {(offset + 1).toLocaleString("en-US")}–{(offset + matches.length).toLocaleString("en-US")}
            {" "}
            (page {page + 1} of {pages})
          </span>
          {page > 0 && <a href={pageLink(s.id, page - 1)} onClick={goPage(s.id, page - 1)}>← Previous</a>}
          {page + 1 < pages && (
            <a href={pageLink(s.id, page + 1)} onClick={goPage(s.id, page + 1)} data-testid="search-next">
              Next →
            </a>
          )}
        </nav>
      )}
      {matches.length > 0 && (
        <div class="table-wrap">
          <table class="table table--cards table--compact" data-testid="search-results">
            <thead>
              <tr>
                <th>Select</th>
                <th>Path</th>
                <th>Size</th>
                <th>Modified</th>
              </tr>
            </thead>
            <tbody>
              {matches.map((m) => (
                <tr key={m.path} data-path={m.path}>
                  <td data-label="Select">
                    <input
                      type="checkbox"
                      name="paths"
                      form="restore-files"
                      value={m.path}
                      aria-label={`Select ${m.path}`}
                      checked={selection.value.includes(m.path)}
                      onChange={() => toggleSelected(m.path)}
                    />
                  </td>
                  <td data-label="Path" class="wrap">
                    <code>{m.path}{m.type === "dir" ? "/" : ""}</code>
                  </td>
                  <td data-label="Size" class="nowrap">{m.type === "dir" ? "—" : formatBytes(m.size)}</td>
                  <td data-label="Modified" class="nowrap">{formatTime(m.modifiedAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
