/**
 * Backup > Restore > file history (issue 21 item 3): `/backup/restore/hosts/:hostId/history?path=…` shows
 * the versions of one file across the host's restore points (domain/file_history.ts), newest first, a page
 * of VERSIONS_PAGE_SIZE at a time, each with "Restore this version". Reached from a file row of a restore
 * point's Browse ("History") and from the host page (a path field). Works without JavaScript: the path form
 * POSTs (303 back here) and, while the BES jobs run, the page says "computing…" and reloads itself every
 * few seconds (a `Refresh` header). Every route needs backup.restore; the host's scope is checked first.
 */
import type { Context } from "hono";
import { Hono } from "hono";
import { z } from "zod";
import {
  Badge,
  Checkbox,
  Csrf,
  EmptyState,
  formatBytes,
  formatTime,
  PageHeader,
  ShortId,
} from "../components/ui.tsx";
import { dateTimeText } from "../components/time.tsx";
import { ConflictError, type FieldErrors, NotFoundError, ValidationError } from "../domain/errors.ts";
import {
  type FileHistoryView,
  type FileVersion,
  MAX_HISTORY_POINTS,
  requestFileHistory,
  restoreFileVersion,
  VERSIONS_PAGE_SIZE,
} from "../domain/file_history.ts";
import { type Host, requireHost } from "../domain/hosts.ts";
import { getFileHistoryPage } from "../domain/read_models/file_history.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { type FormFields, readForm, str } from "./forms.ts";
import { noStore, render } from "./render.tsx";

export const fileHistoryRoutes = new Hono<AppEnv>();

/** How often a page waiting for the BES reloads itself (seconds). */
const REFRESH_SECONDS = 3;

const PageQuery = z.object({
  path: z.string().max(4096).catch(""),
  page: z.coerce.number().int().min(0).max(100_000).catch(0),
}).catch({ path: "", page: 0 });

/** What a refused POST hands back to the page. */
interface FormState {
  form: "path" | "restore";
  message: string;
  fields: FieldErrors;
  values: Record<string, string | boolean>;
}

function historyUrl(hostId: string, path: string, page = 0): string {
  const q = new URLSearchParams({ path });
  if (page) q.set("page", String(page));
  return `/backup/restore/hosts/${hostId}/history?${q}`;
}

function shortHash(id: string | null): string {
  return id ? id.slice(0, 12) : "—";
}

function modeText(mode: number | null): string {
  return mode === null ? "—" : mode.toString(8).padStart(4, "0");
}

function VersionState(props: { v: FileVersion }) {
  const v = props.v;
  if (v.state === "absent") return <Badge tone="muted">not present</Badge>;
  if (v.state === "unreadable") return <Badge tone="bad">unreadable</Badge>;
  return <Badge tone="ok">{v.type === "file" ? "file" : v.type ?? "present"}</Badge>;
}

function VersionPoints(props: { v: FileVersion }) {
  const pts = props.v.points;
  const link = (id: string) => `/backup/restore/points/${id}`;
  return (
    <details open={pts.length <= 3}>
      <summary>
        {pts.length} restore point{pts.length === 1 ? "" : "s"}
      </summary>
      <ul class="path-list">
        {pts.map((p) => (
          <li key={p.id}>
            <a href={link(p.id)}>{formatTime(p.completedAt)}</a> · {p.policyName}
          </li>
        ))}
      </ul>
    </details>
  );
}

async function historyPage(
  c: Context<AppEnv>,
  host: Host,
  path: string,
  page: number,
  state: FormState | null = null,
  status: 200 | 409 | 422 = 200,
) {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const csrf = c.get("csrfToken") ?? "";
  const read = await getFileHistoryPage(kv, actor, { host, path, page }, clock());
  const { view, hosts } = read;
  const pathError = read.pathError ?? (state?.form === "path" ? state.fields.path : undefined);
  if (view?.status === "pending") {
    c.header("Refresh", String(REFRESH_SECONDS));
    noStore(c);
  }
  const restoreErrors = state?.form === "restore" ? state.fields : {};
  const restoreValues = state?.form === "restore" ? state.values : {};
  const location = restoreValues.location === "other" ? "other" : "original";
  const hostLabel = host.hostname;
  return render(
    c,
    `File history · ${hostLabel}`,
    <>
      <PageHeader
        title={view ? `File history: ${view.path}` : "File history"}
        subtitle={<>Every version of one file across the restore points of {hostLabel}</>}
        actions={
          <a class="btn" href={`/backup/restore?hostId=${host.id}`}>
            Restore points of this host
          </a>
        }
      />
      <section class="panel" id="history-path">
        <form method="post" action={`/backup/restore/hosts/${host.id}/history`} class="inline-form">
          <Csrf token={csrf} />
          <label for="history-path-input">File path</label>{" "}
          <input
            id="history-path-input"
            name="path"
            value={state?.form === "path" ? String(state.values.path ?? "") : path}
            placeholder="/srv/data/report.xlsx"
            maxLength={4096}
            required
            aria-invalid={pathError ? "true" : undefined}
          />{" "}
          <button type="submit" class="btn btn--primary">
            {view && view.status !== "none" ? "Update history" : "Show history"}
          </button>
        </form>
        {pathError && <p class="field-error" role="alert">{pathError}</p>}
        {state?.form === "path" && state.message && !pathError && (
          <p class="form-error" role="alert">{state.message}</p>
        )}
        <p class="hint">
          The BES reads the file's entry in each of the host's restore points (the newest{" "}
          {MAX_HISTORY_POINTS}); a history is kept for a week and extended with new points when asked again.
        </p>
      </section>
      {view && <HistoryStatus view={view} />}
      {view && view.status !== "none" && (
        <section class="panel" id="versions">
          <h2>Versions</h2>
          {view.versionsTotal === 0
            ? (
              <EmptyState title="No version yet">
                {view.status === "pending"
                  ? "The BES is still reading the restore points."
                  : "No restore point of this host has been examined for this path."}
              </EmptyState>
            )
            : (
              <form
                method="post"
                action={`/backup/restore/hosts/${host.id}/history/restore`}
                class="form form--wide"
                id="restore-version"
              >
                <Csrf token={csrf} />
                <input type="hidden" name="path" value={view.path} />
                {state?.form === "restore" && (
                  <p class="form-error" role="alert" data-testid="restore-version-error">{state.message}</p>
                )}
                {view.versions.some((v) => v.state === "present") && (
                  <fieldset class="field restore-location" data-testid="version-restore-options">
                    <legend>Where "Restore this version" puts the file</legend>
                    <label class="choice">
                      <input
                        type="radio"
                        name="location"
                        value="original"
                        checked={location === "original"}
                      />{" "}
                      Its original location: {view.path} on {hostLabel}
                    </label>
                    <label class="choice">
                      <input type="radio" name="location" value="other" checked={location === "other"} />{" "}
                      Another host or folder (the file keeps its path below it)
                    </label>
                    <div class="other-location">
                      <div class={restoreErrors.targetHostId ? "field field--error" : "field"}>
                        <label for="v-target-host">Target host</label>
                        <select id="v-target-host" name="targetHostId">
                          {[
                            host,
                            ...hosts.filter((h) =>
                              h.id !== host.id
                            ),
                          ].map((h) => (
                            <option
                              key={h.id}
                              value={h.id}
                              selected={(restoreValues.targetHostId || host.id) === h.id}
                            >
                              {h.hostname}
                              {h.id === host.id ? " (original)" : ""}
                            </option>
                          ))}
                        </select>
                        {restoreErrors.targetHostId && (
                          <p class="field-error">{restoreErrors.targetHostId}</p>
                        )}
                      </div>
                      <div class={restoreErrors.targetPath ? "field field--error" : "field"}>
                        <label for="v-target-path">Target folder</label>
                        <input
                          id="v-target-path"
                          name="targetPath"
                          value={String(restoreValues.targetPath ?? "")}
                          placeholder="/restore"
                          maxLength={4096}
                          aria-invalid={restoreErrors.targetPath ? "true" : undefined}
                        />
                        {restoreErrors.targetPath && <p class="field-error">{restoreErrors.targetPath}</p>}
                      </div>
                    </div>
                    <Checkbox
                      name="overwrite"
                      checked={restoreValues.overwrite === true}
                      label="Overwrite the file at the target (off: a file already there is left as it is)"
                    />
                    <label class={restoreErrors.confirm ? "choice field--error" : "choice"}>
                      <input type="checkbox" name="confirm" value="on" />{" "}
                      I understand: overwriting replaces the file at the target with the chosen version
                    </label>
                    {restoreErrors.confirm && <p class="field-error" role="alert">{restoreErrors.confirm}</p>}
                    <p class="hint">
                      Runs with high priority on the target host's agent; every restored byte is verified.
                    </p>
                  </fieldset>
                )}
                <VersionTable view={view} />
                <Pager view={view} hostId={host.id} />
              </form>
            )}
        </section>
      )}
    </>,
    status,
  );
}

function HistoryStatus(props: { view: FileHistoryView }) {
  const v = props.view;
  return (
    <section class="panel" id="history-status" aria-live="polite">
      {v.status === "none" && (
        <p class="muted" data-testid="history-none">
          Not examined yet: press Show history to have the BES read {v.pointsTotal} restore point
          {v.pointsTotal === 1 ? "" : "s"}.
        </p>
      )}
      {v.status === "pending" && (
        <p class="notice" data-testid="history-pending">
          Computing… the BES is reading the restore points ({v.pointsExamined} of {v.pointsTotal}{" "}
          examined). This page reloads every {REFRESH_SECONDS} seconds; <a href="">reload now</a>.
        </p>
      )}
      {v.status === "ready" && (
        <p data-testid="history-ready">
          {v.versionsTotal} version{v.versionsTotal === 1 ? "" : "s"} in {v.pointsExamined} restore point
          {v.pointsExamined === 1 ? "" : "s"}
          {v.updatedAt ? <>{" "}(updated {formatTime(v.updatedAt)})</> : null}.
        </p>
      )}
      {v.status !== "none" && v.pointsNew > 0 && v.status !== "pending" && (
        <p class="notice notice--warn" data-testid="history-stale">
          {v.pointsNew} restore point{v.pointsNew === 1 ? " is" : "s are"}{" "}
          not in this history yet (new since, or not read): press Update history to add{" "}
          {v.pointsNew === 1 ? "it" : "them"}.
        </p>
      )}
      {v.pointsCapped && (
        <p class="hint">
          This host has more than {MAX_HISTORY_POINTS} restore points: the oldest are left out.
        </p>
      )}
      {v.errors.map((e) => (
        <p class="form-error" role="alert" key={e}>Some restore points were not read: {e}</p>
      ))}
    </section>
  );
}

function VersionTable(props: { view: FileHistoryView }) {
  const v = props.view;
  return (
    <div class="table-wrap" tabIndex={0}>
      <table class="table table--cards" data-testid="versions">
        <caption class="visually-hidden">Versions of {v.path}, newest first</caption>
        <thead>
          <tr>
            <th>#</th>
            <th>State</th>
            <th>Size</th>
            <th>Modified</th>
            <th>Mode</th>
            <th>Content id</th>
            <th>Restore points</th>
            <th>Restore</th>
          </tr>
        </thead>
        <tbody>
          {v.versions.map((ver, i) => {
            const n = v.versionsTotal - (v.page * VERSIONS_PAGE_SIZE + i);
            const newest = ver.points[0];
            return (
              <tr key={newest.id} data-version={n}>
                <td data-label="#">{n}</td>
                <td data-label="State">
                  <VersionState v={ver} />
                  {ver.error && <p class="field-error">{ver.error}</p>}
                </td>
                <td data-label="Size" class="nowrap">
                  {ver.state === "present" ? formatBytes(ver.size) : "—"}
                </td>
                <td data-label="Modified" class="nowrap">{ver.mtime ? formatTime(ver.mtime) : "—"}</td>
                <td data-label="Mode">
                  <code>{modeText(ver.mode)}</code>
                </td>
                <td data-label="Content id">
                  {ver.contentId
                    ? <code title={`SHA-256 ${ver.contentId}`}>{shortHash(ver.contentId)}</code>
                    : ver.chunksId
                    ? (
                      <code title={`Not hashed (over the budget); chunk list ${ver.chunksId}`}>
                        chunks:{shortHash(ver.chunksId)}
                      </code>
                    )
                    : "—"}
                </td>
                <td data-label="Restore points">
                  <VersionPoints v={ver} />
                </td>
                <td data-label="Restore">
                  {ver.state === "present"
                    ? (
                      <button
                        type="submit"
                        class="btn btn--small"
                        name="restorePointId"
                        value={newest.id}
                        aria-label={`Restore version ${n} (from the restore point of ${
                          dateTimeText(newest.completedAt)
                        })`}
                      >
                        Restore this version
                      </button>
                    )
                    : "—"}
                  {ver.state === "present" && (
                    <span class="hint">
                      from <ShortId id={newest.id} />
                    </span>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

function Pager(props: { view: FileHistoryView; hostId: string }) {
  const v = props.view;
  if (v.pages <= 1) return null;
  return (
    <nav class="pager" aria-label="Version pages" data-testid="versions-pager">
      <span>
        Versions {v.page * VERSIONS_PAGE_SIZE + 1}–{v.page * VERSIONS_PAGE_SIZE + v.versions.length} of{" "}
        {v.versionsTotal} (page {v.page + 1} of {v.pages})
      </span>
      {v.page > 0 && <a href={historyUrl(props.hostId, v.path, v.page - 1)}>← Newer</a>}
      {v.page + 1 < v.pages && <a href={historyUrl(props.hostId, v.path, v.page + 1)}>Older →</a>}
    </nav>
  );
}

fileHistoryRoutes.get("/hosts/:hostId/history", requires("backup.restore"), async (c) => {
  const { kv } = c.get("deps");
  const host = await requireHost(kv, c.get("actor")!, c.req.param("hostId"));
  const q = PageQuery.parse(c.req.query());
  return await historyPage(c, host, q.path, q.page);
});

fileHistoryRoutes.post("/hosts/:hostId/history", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const host = await requireHost(kv, actor, c.req.param("hostId"));
  const path = str(await readForm(c), "path").trim();
  try {
    const { view } = await requestFileHistory(kv, actor, host.id, path, clock());
    return c.redirect(`${historyUrl(host.id, view.path)}#history-status`, 303);
  } catch (e) {
    if (e instanceof ValidationError || e instanceof ConflictError) {
      const fields = e instanceof ValidationError ? e.fields : {};
      return await historyPage(c, host, "", 0, {
        form: "path",
        message: e.message,
        fields,
        values: { path },
      }, e instanceof ConflictError ? 409 : 422);
    }
    throw e;
  }
});

/** The checkbox convention of our forms: present and not "false" means on. */
function checked(form: FormFields, key: string): boolean {
  const v = str(form, key);
  return v !== "" && v !== "false" && v !== "off";
}

fileHistoryRoutes.post("/hosts/:hostId/history/restore", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const host = await requireHost(kv, actor, c.req.param("hostId"));
  const form = await readForm(c);
  const values = {
    path: str(form, "path").trim(),
    restorePointId: str(form, "restorePointId"),
    location: str(form, "location") === "other" ? "other" as const : "original" as const,
    targetHostId: str(form, "targetHostId"),
    targetPath: str(form, "targetPath").trim(),
    overwrite: checked(form, "overwrite"),
    confirm: checked(form, "confirm"),
  };
  try {
    const restore = await restoreFileVersion(kv, actor, host.id, values, clock());
    return c.redirect(`/backup/restore/requests/${restore.id}`, 303);
  } catch (e) {
    if (e instanceof ValidationError || e instanceof ConflictError || e instanceof NotFoundError) {
      // The host was found a moment ago: a NotFound is the point or the target host.
      const fields = e instanceof ValidationError ? e.fields : {};
      const shown = values.path && !fields.path ? values.path : "";
      return await historyPage(c, host, shown, 0, {
        form: "restore",
        message: `Nothing was restored: ${e.message}`,
        fields,
        values,
      }, e instanceof ConflictError ? 409 : 422);
    }
    throw e;
  }
});
