/**
 * Backup > Restore (guide, "Restore Operations"): restore points with the guide's filters; a point with
 * its chain, Browse and Search (islands over the JSON API, with form fallbacks), and the file, image and
 * bare-metal restore forms; a restore request's live progress and result. Every route needs
 * backup.restore (the access middleware answers 403 naming it); objects outside the actor's scope are
 * 404s from the domain. Deep links from the dashboard (`?hostId=…&restorePointId=…`) arrive with the host
 * filtered and the point selected; with only a host, its newest complete point is selected.
 */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { redirectToApproval } from "./approvals.tsx";
import { AnomalyMark } from "../components/anomaly.tsx";
import { HoldPanel } from "../components/holds.tsx";
import type { Context } from "hono";
import { Hono } from "hono";
import { z } from "zod";
import { Island } from "../components/Island.tsx";
import { ReplicationTable } from "../components/replication.tsx";
import { EngineResults } from "../components/runs.tsx";
import { KEK_SOURCE_LABELS } from "../domain/replicas.ts";
import {
  Badge,
  Checkbox,
  Csrf,
  DataTable,
  EmptyState,
  FieldFrame,
  formatBytes,
  formatTime,
  PageHeader,
  ShortId,
  type Tone,
} from "../components/ui.tsx";
import { dateTimeText } from "../components/time.tsx";
import { type Engine, engineOnlineAt } from "../domain/engines.ts";
import { ConflictError, type FieldErrors, NotFoundError, ValidationError } from "../domain/errors.ts";
import { type Host } from "../domain/hosts.ts";
import { can } from "../domain/rbac.ts";
import { authorizeExpireArchived, ExpireArchivedInput, expireArchivedPoint } from "../domain/archive.ts";
import { BmrInput, recoveryCommand, requestBmr } from "../domain/bmr.ts";
import {
  type BrowseState,
  requestBrowse,
  requestSearch,
  SearchQuery,
  type SearchState,
} from "../domain/restore_browse.ts";
import {
  FileRestoreInput,
  ImageRestoreInput,
  requestFileRestore,
  requestImageRestore,
  type RestoreRequest,
} from "../domain/restore_requests.ts";
import {
  requireRestorePoint,
  RESTORE_POINT_STATUSES,
  RestorePointFilter,
  type RestorePointView,
  VERIFICATION_STATUSES,
} from "../domain/restore_points.ts";
import { RestorePath } from "../domain/restore_paths.ts";
import BrowseTree from "../islands/BrowseTree.tsx";
import CopySecret from "../islands/CopySecret.tsx";
import RestoreProgress, { REQUEST_TONE } from "../islands/RestoreProgress.tsx";
import RestoreSearch from "../islands/RestoreSearch.tsx";
import SelectedPaths from "../islands/SelectedPaths.tsx";
import { getRestoreIndex, getRestorePointPage, getRestoreRequest } from "../domain/read_models/restore.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, type FormFields, list, readForm, str } from "./forms.ts";
import { StaleCursorNotice } from "./paging.tsx";
import { noStore, redirectWithNotice, render } from "./render.tsx";

export const restoreRoutes = new Hono<AppEnv>();

/** `?page=` of the browsed folder and `?searchPage=` of the search (0-based); anything else is the first. */
const PageQuery = z.object({
  page: z.coerce.number().int().min(0).max(100_000).catch(0),
  searchPage: z.coerce.number().int().min(0).max(100_000).catch(0),
}).catch({ page: 0, searchPage: 0 });

const STATUS_TONE: Record<RestorePointView["status"], Tone> = {
  complete: "ok",
  running: "info",
  failed: "bad",
  expired: "muted",
};
const VERIFICATION_TONE: Record<RestorePointView["verification"], Tone> = {
  passed: "ok",
  failed: "bad",
  partial: "warn",
  pending: "muted",
};
const TYPE_LABEL: Record<string, string> = {
  full: "full",
  incremental: "incremental",
  synthetic_full: "synthetic full",
};
const KIND_LABEL: Record<RestoreRequest["kind"], string> = {
  file: "File restore",
  image: "Image restore",
  bmr: "Bare-metal restore",
};

function PointStatus(props: { point: RestorePointView }) {
  return (
    <>
      <Badge tone={STATUS_TONE[props.point.status]}>{props.point.status}</Badge>
      {props.point.archivedAt && props.point.status !== "expired" && (
        <>
          {" "}
          <Badge tone="info">archived</Badge>
        </>
      )}
    </>
  );
}

function Verification(props: { point: RestorePointView }) {
  return (
    <Badge tone={VERIFICATION_TONE[props.point.verification]}>
      {props.point.verification === "pending"
        ? "not verified yet"
        : `verification ${props.point.verification}`}
    </Badge>
  );
}

/** "erp01 · full · 3 h ago · 02:00 UTC" */
function pointLabel(p: RestorePointView) {
  return <>{p.hostName ?? "BES"} · {TYPE_LABEL[p.type] ?? p.type} · {formatTime(p.completedAt)}</>;
}

/** "erp01 · full · 2026-11-22 02:00 UTC", for the page title. */
function pointTitle(p: RestorePointView): string {
  return `${p.hostName ?? "BES"} · ${TYPE_LABEL[p.type] ?? p.type} · ${dateTimeText(p.completedAt)}`;
}

function PointFacts(props: { point: RestorePointView }) {
  const p = props.point;
  return (
    <dl class="facts" data-testid="point-facts">
      <dt>Host</dt>
      <dd>
        {p.hostId ? <a href={`/backup/hosts/${p.hostId}`}>{p.hostName ?? p.hostId}</a> : "BES-side point"}
      </dd>
      <dt>Policy</dt>
      <dd>
        <a href={`/backup/policies/${p.policyId}`}>{p.policyName}</a> ({p.backupType} backup)
      </dd>
      <dt>BES</dt>
      <dd>
        <a href={`/backup/engines/${p.engineId}`}>{p.besName}</a>
      </dd>
      <dt>Type</dt>
      <dd>{TYPE_LABEL[p.type] ?? p.type}</dd>
      <dt>Completed</dt>
      <dd>{formatTime(p.completedAt)}</dd>
      <dt>Size</dt>
      <dd>
        {formatBytes(p.sizeBytes)} · {p.fileCount.toLocaleString("en")} files
      </dd>
      <dt>Status</dt>
      <dd>
        <PointStatus point={p} /> <Verification point={p} />
      </dd>
      <dt>Chain</dt>
      <dd>
        <a href={`/backup/restore?chainId=${encodeURIComponent(p.chainId)}`}>
          <code>{p.chainId}</code>
        </a>
      </dd>
      <dt>Repository</dt>
      <dd data-testid="point-repository">
        {p.repository
          ? (
            <>
              <code>{p.repository.path}</code> (generation {p.repository.generation}) on{" "}
              <a href={`/backup/storage/${p.repository.target}`}>storage target {p.repository.target}</a>
            </>
          )
          : "not recorded"}
      </dd>
      <dt>Backup run</dt>
      <dd>
        <a href={`/backup/runs/${p.runId}`}>{p.runId}</a>
      </dd>
    </dl>
  );
}

/** The chain of a point: its full, then the incrementals in order, each with size and verification. */
function ChainTable(props: { chain: RestorePointView[]; current: string }) {
  if (props.chain.length === 0) return <p class="muted">The chain of this point is not known.</p>;
  const total = props.chain.reduce((sum, p) => sum + p.sizeBytes, 0);
  return (
    <div class="table-wrap" tabIndex={0}>
      <table class="table table--compact table--cards chain" data-testid="chain">
        <thead>
          <tr>
            <th>#</th>
            <th>Type</th>
            <th>Completed</th>
            <th>Size</th>
            <th>Files</th>
            <th>Status</th>
            <th>Verification</th>
          </tr>
        </thead>
        <tbody>
          {props.chain.map((p, i) => (
            <tr
              key={p.id}
              class={p.id === props.current ? "selected" : undefined}
              aria-current={p.id === props.current ? "true" : undefined}
              data-point={p.id}
            >
              <td data-label="#">{i + 1}</td>
              <td data-label="Type">
                {p.id === props.current
                  ? (
                    <>
                      <strong>{TYPE_LABEL[p.type] ?? p.type}</strong> <Badge tone="info">this point</Badge>
                    </>
                  )
                  : <a href={`/backup/restore/points/${p.id}`}>{TYPE_LABEL[p.type] ?? p.type}</a>}
              </td>
              <td data-label="Completed">{formatTime(p.completedAt)}</td>
              <td class="nowrap" data-label="Size">{formatBytes(p.sizeBytes)}</td>
              <td data-label="Files">{p.fileCount.toLocaleString("en")}</td>
              <td class="cell-status" data-label="Status">
                <PointStatus point={p} />
              </td>
              <td data-label="Verification">
                <Verification point={p} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p class="hint">
        {props.chain.length} point{props.chain.length === 1 ? "" : "s"}, {formatBytes(total)}{" "}
        in all. Restoring a point reads its full and every incremental up to it.
      </p>
    </div>
  );
}

// ---------------------------------------------------------------------------------------------------
// Restore points

const FILTER_KEYS = ["hostId", "policyId", "besId", "chainId", "status", "verification"] as const;

restoreRoutes.get("/", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const query = c.req.query();
  // Deep link: the named point is selected (and, when the link names no host, its host is filtered);
  // with only a host, its newest complete point (of the filtered policy, if any) is selected.
  const data = await getRestoreIndex(kv, actor, {
    filter: RestorePointFilter.parse(query),
    restorePointId: String(query.restorePointId ?? "").slice(0, 100),
    hostGiven: "hostId" in query,
  }, clock());
  const {
    filter,
    selected,
    selectionNote,
    page,
    staleCursor,
    chain,
    hosts,
    policies,
    engines,
    recent,
    hostOptions,
  } = data;
  const keep: Record<string, string> = {};
  for (const k of FILTER_KEYS) if (filter[k]) keep[k] = String(filter[k]);
  if (filter.limit !== 50) keep.limit = String(filter.limit);
  const filtered = FILTER_KEYS.some((k) => filter[k]);
  const select = (
    name: string,
    label: string,
    all: string,
    options: Array<{ value: string; label: string }>,
    value: string,
  ) => (
    <select name={name} aria-label={label}>
      <option value="">{all}</option>
      {options.map((o) => (
        <option key={o.value} value={o.value} selected={o.value === value}>{o.label}</option>
      ))}
    </select>
  );
  const hostNames = new Map(hosts.values.map((h) => [h.id, h.hostname]));
  return render(
    c,
    "Restore",
    <>
      <PageHeader
        title="Restore"
        subtitle="Restore points of every backup you can restore, newest first. Open one to browse or search its files and restore files, an image or a whole machine."
      />
      <StaleCursorNotice show={staleCursor} />
      <form method="get" action="/backup/restore" class="filters" aria-label="Filter restore points">
        {select("hostId", "Host", "All hosts", hostOptions, filter.hostId)}
        {select(
          "policyId",
          "Policy",
          "All policies",
          policies.map((p) => ({ value: p.id, label: p.name })),
          filter.policyId,
        )}
        {select(
          "besId",
          "BES",
          "All engines",
          engines.values.map((e) => ({ value: e.id, label: e.name })),
          filter.besId,
        )}
        <input
          type="search"
          name="chainId"
          value={filter.chainId}
          placeholder="Chain id"
          aria-label="Chain id"
        />
        {select(
          "status",
          "Status",
          "Any status",
          RESTORE_POINT_STATUSES.map((s) => ({ value: s, label: s })),
          filter.status,
        )}
        {select(
          "verification",
          "Verification",
          "Any verification",
          VERIFICATION_STATUSES.map((s) => ({ value: s, label: s })),
          filter.verification,
        )}
        <button type="submit" class="btn">Filter</button>
        {filtered && <a href="/backup/restore">Clear</a>}
      </form>
      {selectionNote && <p class="notice notice--warn" role="alert">{selectionNote}</p>}
      {selected && (
        <section
          class="panel restore-selected"
          id="selected"
          data-testid="selected-point"
          data-point={selected.id}
        >
          <h2>Selected: {pointLabel(selected)}</h2>
          <PointFacts point={selected} />
          <h3>Chain</h3>
          <ChainTable chain={chain} current={selected.id} />
          <p class="actions">
            <a class="btn btn--primary" href={`/backup/restore/points/${selected.id}#browse`}>
              Browse and restore files
            </a>
            {selected.backupType === "image" && (
              <a class="btn" href={`/backup/restore/points/${selected.id}#image`}>Restore image</a>
            )}
            <a class="btn" href={`/backup/restore/points/${selected.id}#bmr`}>Bare-metal restore</a>
          </p>
        </section>
      )}
      {filter.hostId && !selected && !selectionNote && !filter.cursor && (
        <p class="notice" data-testid="no-complete-point">
          {hostNames.get(filter.hostId) ?? "This host"}{" "}
          has no complete restore point yet{filter.policyId ? " under this policy" : ""}.
        </p>
      )}
      {page.values.length === 0
        ? (
          <EmptyState title={filtered ? "No restore points match these filters" : "No restore points yet"}>
            {filtered
              ? <a href="/backup/restore">Clear the filters</a>
              : "A restore point appears here when a backup completes."}
          </EmptyState>
        )
        : (
          <DataTable
            class="table table--cards"
            testid="restore-points"
            heads={["Completed", "Host", "Policy", "BES", "Type", "Chain", "Size", "Status", "Verification"]}
          >
            {page.values.map((p) => (
              <tr
                key={p.id}
                data-point={p.id}
                class={p.id === selected?.id ? "selected" : undefined}
                aria-current={p.id === selected?.id ? "true" : undefined}
              >
                <td data-label="Completed">
                  <a href={`/backup/restore/points/${p.id}`}>{formatTime(p.completedAt)}</a>
                </td>
                <td data-label="Host">{p.hostName ?? "BES"}</td>
                <td data-label="Policy">{p.policyName}</td>
                <td data-label="BES">{p.besName}</td>
                <td data-label="Type">{TYPE_LABEL[p.type] ?? p.type}</td>
                <td data-label="Chain">
                  <a
                    href={"?" + new URLSearchParams({ ...keep, chainId: p.chainId })}
                    aria-label={`Show chain ${p.chainId}`}
                  >
                    <ShortId id={p.chainId} />
                  </a>
                </td>
                <td class="nowrap" data-label="Size">{formatBytes(p.sizeBytes)}</td>
                <td class="cell-status" data-label="Status">
                  <PointStatus point={p} />
                  {p.anomaly && (
                    <>
                      {" "}
                      <a href={`/backup/restore/points/${p.id}#anomaly`} data-testid="point-anomaly">
                        <Badge tone={p.anomaly.mark === "suspect" ? "bad" : "ok"}>
                          {p.anomaly.mark === "suspect" ? "suspect" : "last clean"}
                        </Badge>
                      </a>
                    </>
                  )}
                </td>
                <td data-label="Verification">
                  <Verification point={p} />
                </td>
              </tr>
            ))}
          </DataTable>
        )}
      <nav class="pager" aria-label="Pagination">
        <span>{page.values.length} shown</span>
        {filter.cursor && <a href={"?" + new URLSearchParams(keep)}>← Newest</a>}
        {page.cursor && <a href={"?" + new URLSearchParams({ ...keep, cursor: page.cursor })}>Older →</a>}
      </nav>
      {recent.values.length > 0 && (
        <section class="panel" id="recent-restores">
          <h2>Recent restores</h2>
          <RestoreTable restores={recent.values} />
        </section>
      )}
    </>,
  );
});

function RestoreTable(props: { restores: RestoreRequest[] }) {
  return (
    <DataTable
      class="table table--compact table--cards"
      testid="recent-restores"
      heads={["Requested", "Kind", "Target", "Status"]}
    >
      {props.restores.map((r) => (
        <tr key={r.id}>
          <td data-label="Requested">
            <a href={`/backup/restore/requests/${r.id}`}>{formatTime(r.createdAt)}</a>
          </td>
          <td data-label="Kind">
            {KIND_LABEL[r.kind]}
            {r.kind === "file" ? ` (${r.pathCount} path${r.pathCount === 1 ? "" : "s"})` : ""}
            {r.mode ? ` (${r.mode.toUpperCase()})` : ""}
          </td>
          <td class="wrap" data-label="Target">{r.targetPath ? <code>{r.targetPath}</code> : "—"}</td>
          <td class="cell-status" data-label="Status">
            <Badge tone={REQUEST_TONE[r.status]}>{r.status}</Badge>
          </td>
        </tr>
      ))}
    </DataTable>
  );
}

// ---------------------------------------------------------------------------------------------------
// A restore point: chain, Browse, Search and the restore forms

type FormName = "browse" | "search" | "files" | "image" | "bmr";

/** What a failed POST hands back to the page: which form, its field errors and the typed values. */
interface FormState {
  form: FormName;
  fields: FieldErrors;
  message?: string;
  values: {
    path?: string;
    query?: string;
    paths?: string[];
    /** The file restore's "Restore to" choice. */
    location?: "original" | "other";
    targetHostId?: string;
    targetPath?: string;
    overwrite?: boolean;
    mode?: string;
    /** "" or absent: the point's own copy; else a finished replica's storage target. */
    sourceTargetId?: string;
  };
}

/** Why bare-metal restore of `point` is refused right now, or null when it can go ahead. */
function bmrBlockedReason(point: RestorePointView, engine: Engine | null, now: Date): string | null {
  if (point.status !== "complete") {
    return `Only a complete restore point can be restored bare-metal; this one is ${point.status}.`;
  }
  if (!engine || !engineOnlineAt(engine, now)) {
    return `BES ${point.besName} is offline: bare-metal restore needs it online (a heartbeat in the last 3 minutes).`;
  }
  return null;
}

async function pointPage(
  c: Context<AppEnv>,
  point: RestorePointView,
  state: FormState | null = null,
  status: 200 | 409 | 422 = 200,
) {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const now = clock();
  const csrf = c.get("csrfToken") ?? "";
  // Browse: the listing of ?path= (or of the path just typed) as the server has it cached.
  const pathParsed = RestorePath.safeParse(c.req.query("path") || "/");
  const browsePath = pathParsed.success ? pathParsed.data : "/";
  const searchId = c.req.query("searchId") ?? "";
  const pages = PageQuery.parse(c.req.query());
  const { chain, replications, engine, hosts, browse, search, run, holds, anomaly, mayHold, original } =
    await getRestorePointPage(kv, actor, { point, browsePath, searchId, pages }, now);
  const hostOptions = targetHosts(hosts.values, original);
  // A decommissioned host gets no new work by default: the operator picks where the files go.
  const originalIsDefault = Boolean(point.hostId) && original?.status !== "decommissioned";
  const errorsOf = (form: FormName) => state?.form === form ? state.fields : {};
  const valuesOf = (form: FormName) => state?.form === form ? state.values : {};
  const messageOf = (form: FormName) =>
    state?.form === form && (state.message || Object.keys(state.fields).length)
      ? (
        <p class="form-error" role="alert">
          {state.message ?? "Nothing was queued: correct the fields below."}
        </p>
      )
      : null;
  const bmrBlocked = bmrBlockedReason(point, engine, now);
  // Browse and search jobs wait in the BES's queue: say why nothing comes back rather than wait silently.
  const besOffline = !engine || !engineOnlineAt(engine, now)
    ? (
      <p class="notice notice--warn" data-testid="bes-offline">
        BES {point.besName}{" "}
        is offline: browse and search requests wait in its queue and are answered when it is back.
      </p>
    )
    : null;
  const files = valuesOf("files");
  const image = valuesOf("image");
  // "Restore from": the point's own copy, or a finished replica of it (read through that target's BES).
  const sourceOptions = [
    { value: "", label: `Its own copy (BES ${point.besName})` },
    ...replications.filter((r) => r.status === "succeeded").map((r) => ({
      value: r.targetId,
      label: `Replica on ${r.targetName ?? r.targetId}${
        r.kekSource ? ` — KEK: ${KEK_SOURCE_LABELS[r.kekSource]}` : ""
      }`,
    })),
  ];
  const sourceSelect = (form: "files" | "image", value: string | undefined) =>
    sourceOptions.length > 1 && (
      <HostSelect
        form={form}
        name="sourceTargetId"
        label="Restore from"
        hosts={sourceOptions}
        value={value ?? ""}
        error={errorsOf(form).sourceTargetId}
        hint="A replica is read through the BES of its target: useful when the primary target or its BES is down."
      />
    );
  const searchState: SearchState | null = search && search.restorePointId === point.id ? search : null;
  const browseErrors = errorsOf("browse");
  if (!pathParsed.success) browseErrors.path = "Path must be an absolute path without “..”; showing /";
  return render(
    c,
    `Restore point · ${pointTitle(point)}`,
    <>
      <PageHeader
        title={`Restore point: ${point.hostName ?? "BES"}`}
        subtitle={
          <>
            {TYPE_LABEL[point.type] ?? point.type} of {formatTime(point.completedAt)} · policy{" "}
            {point.policyName} · BES {point.besName}
          </>
        }
        actions={
          <a
            class="btn"
            href={`/backup/restore?${new URLSearchParams({
              ...(point.hostId ? { hostId: point.hostId } : {}),
              restorePointId: point.id,
            })}`}
          >
            All points of this host
          </a>
        }
      />
      {anomaly && point.anomaly && <AnomalyMark anomaly={anomaly} mark={point.anomaly.mark} />}
      <div class="grid-2">
        <section class="panel">
          <h2>Restore point</h2>
          <PointFacts point={point} />
        </section>
        <section class="panel" id="results">
          <h2>Engine results</h2>
          <EngineResults stats={point.stats} errorCount={run?.errorCount} testId="point-results" />
          {(run?.errorCount ?? 0) > 0 && (
            <p>
              <a href={`/backup/runs/${point.runId}#errors`}>
                {run!.errorCount!.toLocaleString("en-US")} per-file error{run!.errorCount === 1 ? "" : "s"}
              </a>{" "}
              on the backup run.
            </p>
          )}
        </section>
      </div>
      <HoldPanel
        holds={holds}
        noun="restore point"
        placeHref={mayHold ? `/backup/holds?${new URLSearchParams({ pointId: point.id })}#place` : null}
      />
      <section class="panel" id="chain">
        <h2>Chain</h2>
        <ChainTable chain={chain} current={point.id} />
      </section>
      <section class="panel" id="replication">
        <h2>Replication</h2>
        {replications.length === 0
          ? (
            <p class="muted">
              Not replicated: no replica rule of policy {point.policyName}{" "}
              applied to this point when it was created.
            </p>
          )
          : <ReplicationTable rows={replications} />}
      </section>
      {point.archivedAt && point.status !== "expired" && (
        <section class="panel panel--danger" id="archived">
          <h2>Archived</h2>
          <p data-testid="archived">
            Kept since its host was decommissioned ({formatTime(point.archivedAt)}): policy {point.policyName}
            {" "}
            archives backups on host deactivation, so retention does not expire this point. Expire it once it
            is no longer needed; expire the incrementals that depend on it first.
          </p>
          {can(actor, "backup.manage", { accountId: point.accountId, orgId: point.orgId }) &&
            point.status === "complete" && (
            <form method="post" action={`/backup/restore/points/${point.id}/expire`} class="form">
              <Csrf token={csrf} />
              <label class="choice">
                <input type="checkbox" name="confirm" value="on" required />{" "}
                I understand: the BES deletes this restore point's data for good
              </label>
              <div class="form-actions">
                <button type="submit" class="btn btn--danger">Expire restore point</button>
              </div>
            </form>
          )}
        </section>
      )}
      <section class="panel" id="browse">
        <h2>Browse</h2>
        <p class="hint">
          The BES lists one folder at a time, 200 entries a page; a folder listed before shows at once. Tick
          files and folders to restore them below.
        </p>
        {besOffline}
        {messageOf("browse")}
        {browseErrors.path && <p class="field-error" role="alert">{browseErrors.path}</p>}
        <Island
          name="BrowseTree"
          component={BrowseTree}
          props={{
            restorePointId: point.id,
            csrfToken: csrf,
            path: browse?.path ?? browsePath,
            typed: valuesOf("browse").path,
            initial: browse as BrowseState | null,
            historyHostId: point.hostId && point.backupType === "file" ? point.hostId : null,
          }}
        />
        {point.hostId && point.backupType === "file" && (
          // The History buttons of file rows submit this form (with the file's path): one click to its history.
          <form id="file-history" method="post" action={`/backup/restore/hosts/${point.hostId}/history`}>
            <Csrf token={csrf} />
          </form>
        )}
      </section>
      <section class="panel" id="search">
        <h2>Search</h2>
        <p class="hint">
          A name or a glob (<code>*.pdf</code>,{" "}
          <code>report-2026-??.xlsx</code>); the BES returns up to 10,000 matches, 200 a page.
        </p>
        {besOffline}
        {messageOf("search")}
        {errorsOf("search").query && <p class="field-error" role="alert">{errorsOf("search").query}</p>}
        <Island
          name="RestoreSearch"
          component={RestoreSearch}
          props={{
            restorePointId: point.id,
            csrfToken: csrf,
            initial: searchState,
            query: valuesOf("search").query,
          }}
        />
      </section>
      <section class="panel" id="restore-files-panel">
        <h2>Restore files</h2>
        {point.status !== "complete" && (
          <p class="notice notice--warn">
            This point is {point.status}: only a complete point can be restored.
          </p>
        )}
        {messageOf("files")}
        <form
          method="post"
          action={`/backup/restore/points/${point.id}/files`}
          class="form form--wide"
          id="restore-files"
        >
          <Csrf token={csrf} />
          <Island
            name="SelectedPaths"
            component={SelectedPaths}
            props={{ initial: files.paths ?? [], error: errorsOf("files").paths }}
          />
          <fieldset class="field restore-location" data-testid="restore-location">
            <legend>Restore to</legend>
            <label class="choice">
              <input
                type="radio"
                name="location"
                value="original"
                id="f-location-original"
                checked={originalIsDefault && (files.location ?? "original") === "original"}
                disabled={!originalIsDefault}
              />{" "}
              Original location: each file back to its own path on {original?.hostname ?? "its host"}
            </label>
            {!originalIsDefault && (
              <p class="hint">
                {point.hostId
                  ? "Not offered: the original host is decommissioned."
                  : "Not offered: this point was taken on the BES, not on a host."}
              </p>
            )}
            <label class="choice">
              <input
                type="radio"
                name="location"
                value="other"
                id="f-location-other"
                checked={!originalIsDefault || files.location === "other"}
              />{" "}
              Another host or folder
            </label>
          </fieldset>
          <div class="other-location">
            <HostSelect
              form="files"
              name="targetHostId"
              label="Target host"
              hosts={hostOptions}
              value={files.targetHostId ?? (originalIsDefault ? point.hostId! : "")}
              blank={originalIsDefault ? undefined : "Choose a host…"}
              error={errorsOf("files").targetHostId}
              hint={originalIsDefault
                ? "Defaults to the original host; any host of your organizations can receive the files."
                : "The original host is decommissioned: choose the host to receive the files."}
            />
            <TextField
              form="files"
              name="targetPath"
              label="Target path"
              value={files.targetPath ?? ""}
              error={errorsOf("files").targetPath}
              hint="An absolute folder on the target host; the files keep their paths below it."
            />
          </div>
          {sourceSelect("files", files.sourceTargetId)}
          <Overwrite checked={files.overwrite ?? false} error={errorsOf("files").overwrite} />
          <div class="form-actions">
            <button type="submit" class="btn btn--primary" disabled={point.status !== "complete"}>
              Restore files
            </button>
            <span class="hint">Runs with high priority on the target host's agent.</span>
          </div>
        </form>
      </section>
      {point.backupType === "image" && (
        <section class="panel" id="image">
          <h2>Restore image</h2>
          <p class="hint">A full disk image restore, with critical priority. Choose the target explicitly.</p>
          {messageOf("image")}
          <form method="post" action={`/backup/restore/points/${point.id}/image`} class="form">
            <Csrf token={csrf} />
            <HostSelect
              form="image"
              name="targetHostId"
              label="Target host"
              hosts={hostOptions}
              value={image.targetHostId ?? ""}
              blank="Choose a host…"
              error={errorsOf("image").targetHostId}
            />
            <TextField
              form="image"
              name="targetPath"
              label="Target path"
              value={image.targetPath ?? ""}
              error={errorsOf("image").targetPath}
              hint="The mount or image path to restore into."
              required
            />
            {sourceSelect("image", image.sourceTargetId)}
            <Overwrite checked={image.overwrite ?? false} error={errorsOf("image").overwrite} />
            <div class="form-actions">
              <button type="submit" class="btn btn--primary" disabled={point.status !== "complete"}>
                Restore image
              </button>
            </div>
          </form>
        </section>
      )}
      <section class="panel" id="bmr">
        <h2>Bare-metal restore</h2>
        <p class="hint">
          Recovers a whole machine onto new or wiped hardware. The machine boots any Linux live environment —
          over the network (PXE, from your boot server) or from live media (ISO) — and runs the Cadres
          recovery agent:
        </p>
        <pre
          class="command"
          data-testid="bmr-command"
        ><code>{engine ? recoveryCommand(engine) : "deno task agent recover --bes URL --bes-cert FILE --token TOKEN --disk PATH"}</code></pre>
        <p class="hint" data-testid="bmr-needs">
          It redeems a one-time token (valid 4 hours, usable once) with BES{" "}
          {point.besName}, reads the image through the BES's data API and writes it onto the disk, verifying
          every chunk. You need: the token (shown once after Create), the BES's certificate (shown with it),
          network access from the machine to the BES, Deno 2 and the Cadres source in the live environment,
          and the disk to overwrite. The BES serves no boot images (docs/engines.md, "Bare-metal restore").
        </p>
        {messageOf("bmr")}
        {bmrBlocked && (
          <p class="notice notice--warn" id="bmr-blocked" data-testid="bmr-blocked">
            {bmrBlocked}
          </p>
        )}
        <form method="post" action={`/backup/restore/points/${point.id}/bmr`} class="form">
          <Csrf token={csrf} />
          <fieldset class={errorsOf("bmr").mode ? "field field--error" : "field"}>
            <legend>Boot method</legend>
            <label class="choice">
              <input
                type="radio"
                name="mode"
                value="pxe"
                disabled={!engine?.pxeEnabled}
                checked={(valuesOf("bmr").mode ?? (engine?.pxeEnabled ? "pxe" : "iso")) === "pxe"}
              />{" "}
              PXE (network boot of a live environment)
            </label>
            {!engine?.pxeEnabled && (
              <p class="hint">
                PXE is off on BES {point.besName}; an administrator can enable it on the engine page.
              </p>
            )}
            <label class="choice">
              <input
                type="radio"
                name="mode"
                value="iso"
                checked={(valuesOf("bmr").mode ?? (engine?.pxeEnabled ? "pxe" : "iso")) === "iso"}
              />{" "}
              ISO (live boot media)
            </label>
            {errorsOf("bmr").mode && <p class="field-error">{errorsOf("bmr").mode}</p>}
          </fieldset>
          <div class="form-actions">
            <button
              type="submit"
              class="btn btn--primary"
              disabled={Boolean(bmrBlocked)}
              aria-describedby={bmrBlocked ? "bmr-blocked" : undefined}
            >
              Create BMR token
            </button>
            <span class="hint">Runs with critical priority on the BES.</span>
          </div>
        </form>
      </section>
    </>,
    status,
  );
}

/** Hosts the files may go to: in scope (listHosts checks), the original first. */
function targetHosts(hosts: Host[], original: Host | null): Array<{ value: string; label: string }> {
  const out = hosts.map((h) => ({ value: h.id, label: h.hostname }));
  if (original && !out.some((o) => o.value === original.id)) {
    out.unshift({ value: original.id, label: original.hostname });
  }
  const mark = original?.status === "decommissioned" ? " (original, decommissioned)" : " (original)";
  return out.map((o) => o.value === original?.id ? { ...o, label: `${o.label}${mark}` } : o);
}

function HostSelect(props: {
  form: "files" | "image";
  name: string;
  label: string;
  hosts: Array<{ value: string; label: string }>;
  value: string;
  blank?: string;
  error?: string;
  hint?: string;
}) {
  const id = `f-${props.name}-${props.form}`;
  return (
    <FieldFrame id={id} label={props.label} error={props.error} hint={props.hint}>
      <select
        id={id}
        name={props.name}
        aria-invalid={props.error ? "true" : undefined}
        required={Boolean(props.blank)}
      >
        {props.blank && <option value="">{props.blank}</option>}
        {props.hosts.map((h) => (
          <option key={h.value} value={h.value} selected={h.value === props.value}>{h.label}</option>
        ))}
      </select>
    </FieldFrame>
  );
}

/** A labelled path input; `form` keeps ids unique when the files and image forms share a page. */
function TextField(
  props: {
    form: "files" | "image";
    name: string;
    label: string;
    value: string;
    error?: string;
    hint?: string;
    required?: boolean;
  },
) {
  const id = `f-${props.name}-${props.form}`;
  return (
    <FieldFrame id={id} label={props.label} error={props.error} hint={props.hint} described>
      <input
        id={id}
        name={props.name}
        value={props.value}
        required={props.required}
        maxLength={4096}
        placeholder="/restore"
        aria-invalid={props.error ? "true" : undefined}
        aria-describedby={props.error ? `${id}-error` : props.hint ? `${id}-hint` : undefined}
      />
    </FieldFrame>
  );
}

function Overwrite(props: { checked: boolean; error?: string }) {
  return (
    <div class={props.error ? "field field--error" : "field"}>
      <Checkbox name="overwrite" checked={props.checked} label="Overwrite existing files at the target" />
      <p class="hint">Off by default: files already at the target are left as they are.</p>
      {props.error && <p class="field-error">{props.error}</p>}
    </div>
  );
}

/** Turns a refusal of the domain into the form's error; anything else propagates. */
function refused(
  c: Context<AppEnv>,
  point: RestorePointView,
  form: FormName,
  values: FormState["values"],
  e: unknown,
) {
  if (e instanceof ValidationError) {
    return pointPage(c, point, { form, fields: e.fields, message: e.message, values }, 422);
  }
  if (e instanceof z.ZodError) return pointPage(c, point, { form, fields: fieldErrors(e), values }, 422);
  if (e instanceof ConflictError) {
    return pointPage(c, point, { form, fields: {}, message: `Not queued: ${e.message}`, values }, 409);
  }
  // The point was found a moment ago: what is missing now is the target host (or the point just went).
  if (e instanceof NotFoundError) {
    return pointPage(c, point, { form, fields: {}, message: `Not queued: ${e.message}`, values }, 422);
  }
  throw e;
}

restoreRoutes.get("/points/:restorePointId", requires("backup.restore"), async (c) => {
  const point = await requireRestorePoint(c.get("deps").kv, c.get("actor")!, c.req.param("restorePointId"));
  return await pointPage(c, point);
});

// Needs backup.manage, not backup.restore (expiring is retention's business, not a restore): a refusal
// goes back to the point's page as a notice rather than re-rendering a page the actor may not read.
restoreRoutes.post("/points/:restorePointId/expire", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const id = c.req.param("restorePointId");
  const back = `/backup/restore/points/${id}`;
  const parsed = ExpireArchivedInput.safeParse({ confirm: str(await readForm(c), "confirm") === "on" });
  if (!parsed.success) {
    // The point's scope before the confirmation: a point out of scope is a 404 either way.
    await authorizeExpireArchived(kv, c.get("actor")!, id);
    return redirectWithNotice(c, `${back}#archived`, "Not expired: tick the confirmation first.");
  }
  try {
    const request = await requestIfFourEyes(
      kv,
      c.get("actor")!,
      { kind: "restore_point.expire", input: { restorePointId: id } },
      clock(),
    );
    if (request) return redirectToApproval(c, request);
    await expireArchivedPoint(kv, c.get("actor")!, id, parsed.data, clock());
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return redirectWithNotice(c, `${back}#archived`, `Not expired: ${e.message}`);
  }
  return redirectWithNotice(c, back, "Restore point expired: the BES prunes its data.");
});

restoreRoutes.post("/points/:restorePointId/browse", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const point = await requireRestorePoint(kv, actor, c.req.param("restorePointId"));
  const path = str(await readForm(c), "path").trim() || "/";
  const parsed = RestorePath.safeParse(path);
  if (!parsed.success) {
    return await pointPage(c, point, {
      form: "browse",
      fields: { path: `Path: ${parsed.error.issues[0].message}` },
      values: { path },
    }, 422);
  }
  try {
    const state = await requestBrowse(kv, actor, point.id, parsed.data, clock());
    return c.redirect(
      `/backup/restore/points/${point.id}?path=${encodeURIComponent(state.path)}#browse`,
      303,
    );
  } catch (e) {
    return await refused(c, point, "browse", { path }, e);
  }
});

restoreRoutes.post("/points/:restorePointId/search", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const point = await requireRestorePoint(kv, actor, c.req.param("restorePointId"));
  const query = str(await readForm(c), "query");
  const parsed = SearchQuery.safeParse(query);
  if (!parsed.success) {
    const message = `Name or glob ${parsed.error.issues[0].message}`;
    return await pointPage(c, point, { form: "search", fields: { query: message }, values: { query } }, 422);
  }
  try {
    const state = await requestSearch(kv, actor, point.id, parsed.data, clock());
    return c.redirect(
      `/backup/restore/points/${point.id}?searchId=${encodeURIComponent(state.id)}#search`,
      303,
    );
  } catch (e) {
    return await refused(c, point, "search", { query }, e);
  }
});

/** The checkbox convention of our forms: present and not "false" means on. */
function checked(form: FormFields, key: string): boolean {
  const v = str(form, key);
  return v !== "" && v !== "false" && v !== "off";
}

/** A POST to one of a restore point's forms: the point (in the actor's scope) and the submitted form. */
async function pointForm(c: Context<AppEnv>, restorePointId: string) {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const point = await requireRestorePoint(kv, actor, restorePointId);
  return { kv, clock, actor, point, form: await readForm(c) };
}

/** Where the file and image forms send a restore, as typed. */
function targetValues(form: FormFields) {
  return {
    targetHostId: str(form, "targetHostId"),
    targetPath: str(form, "targetPath").trim(),
    overwrite: checked(form, "overwrite"),
    sourceTargetId: str(form, "sourceTargetId"),
  };
}

/**
 * Queues the restore a form asked for and goes to its request page, without a flash notice: the page's
 * status line says "queued" and changes as the restore runs. A refusal shows the form again.
 */
async function queueRestore(
  c: Context<AppEnv>,
  point: RestorePointView,
  form: "files" | "image",
  values: FormState["values"],
  request: () => Promise<{ id: string }>,
) {
  try {
    const restore = await request();
    return c.redirect(`/backup/restore/requests/${restore.id}`, 303);
  } catch (e) {
    return await refused(c, point, form, values, e);
  }
}

restoreRoutes.post("/points/:restorePointId/files", requires("backup.restore"), async (c) => {
  const { kv, clock, actor, point, form } = await pointForm(c, c.req.param("restorePointId"));
  // The textarea (one per line) and, without JavaScript, the ticked checkboxes of Browse and Search.
  const paths = [
    ...new Set(list(form, "paths").flatMap((v) => v.split(/\r?\n/)).map((p) => p.trim()).filter(Boolean)),
  ];
  // "Original location": the point's own host, every file at its own path (below "/"). A form without
  // the choice (an older page, a script) names its target itself.
  const location = str(form, "location") === "original" ? "original" as const : "other" as const;
  const values = { paths, location, ...targetValues(form) };
  if (location === "original" && !point.hostId) {
    return await pointPage(c, point, {
      form: "files",
      fields: { targetHostId: "This point has no original host: choose where the files go" },
      values: { ...values, location: "other" },
    }, 422);
  }
  const parsed = FileRestoreInput.safeParse({
    restorePointId: point.id,
    paths,
    targetHostId: location === "original" ? point.hostId! : values.targetHostId || undefined,
    targetPath: location === "original" ? "/" : values.targetPath,
    overwrite: values.overwrite,
    sourceTargetId: values.sourceTargetId,
  });
  if (!parsed.success) {
    return await pointPage(c, point, { form: "files", fields: fieldErrors(parsed.error), values }, 422);
  }
  return await queueRestore(
    c,
    point,
    "files",
    values,
    () => requestFileRestore(kv, actor, parsed.data, clock()),
  );
});

restoreRoutes.post("/points/:restorePointId/image", requires("backup.restore"), async (c) => {
  const { kv, clock, actor, point, form } = await pointForm(c, c.req.param("restorePointId"));
  const values = targetValues(form);
  const parsed = ImageRestoreInput.safeParse({ restorePointId: point.id, ...values });
  if (!parsed.success || !values.targetHostId) {
    const fields = parsed.success ? {} : fieldErrors(parsed.error);
    if (!values.targetHostId) fields.targetHostId = "Choose the host to restore the image to";
    return await pointPage(c, point, { form: "image", fields, values }, 422);
  }
  return await queueRestore(
    c,
    point,
    "image",
    values,
    () => requestImageRestore(kv, actor, parsed.data, clock()),
  );
});

restoreRoutes.post("/points/:restorePointId/bmr", requires("backup.restore"), async (c) => {
  const { kv, clock, actor, point, form } = await pointForm(c, c.req.param("restorePointId"));
  const mode = str(form, "mode");
  const parsed = BmrInput.safeParse({ restorePointId: point.id, mode });
  if (!parsed.success) {
    return await pointPage(
      c,
      point,
      { form: "bmr", fields: { mode: "Choose PXE or ISO" }, values: { mode } },
      422,
    );
  }
  let created: Awaited<ReturnType<typeof requestBmr>>;
  try {
    created = await requestBmr(kv, actor, parsed.data, clock());
  } catch (e) {
    return await refused(c, point, "bmr", { mode }, e);
  }
  // The token exists only in this response: no redirect (it would need to carry it), never cached.
  noStore(c);
  return render(
    c,
    "Bare-metal restore token",
    <>
      <PageHeader
        title="Bare-metal restore queued"
        subtitle={
          <>
            {pointLabel(point)} · {parsed.data.mode.toUpperCase()} boot through BES {point.besName}
          </>
        }
      />
      <p class="notice notice--warn" data-testid="bmr-once">
        Copy the token now: it is shown only this once and cannot be shown again. It expires{" "}
        {formatTime(created.expiresAt)} and works for one boot.
      </p>
      <Island
        name="CopySecret"
        component={CopySecret}
        props={{ label: "One-time BMR token", secret: created.token }}
      />
      <section class="panel" data-testid="bmr-instructions">
        <h2>Next steps</h2>
        <ol>
          {created.instructions.map((step) => <li key={step}>{step}</li>)}
        </ol>
        <h3>The recovery agent's command</h3>
        <pre class="command" data-testid="bmr-token-command"><code>{created.command}</code></pre>
        <h3>Certificate of BES {point.besName} (save as bes-cert.pem)</h3>
        {created.besCertificate
          ? <pre class="command" data-testid="bmr-certificate"><code>{created.besCertificate}</code></pre>
          : (
            <p class="notice notice--warn" data-testid="bmr-certificate">
              BES {point.besName} has not reported a certificate yet: copy <code>tls/cert.pem</code>{" "}
              from its data folder.
            </p>
          )}
        <p class="hint">
          A used or expired token is refused; create a new one from the restore point if needed.
        </p>
      </section>
      <p>
        <a class="btn btn--primary" href={`/backup/restore/requests/${created.restore.id}`}>
          Follow the restore
        </a>
      </p>
    </>,
  );
});

// ---------------------------------------------------------------------------------------------------
// A restore request

restoreRoutes.get("/requests/:restoreId", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { r, source, target, point, replicaTarget } = await getRestoreRequest(
    kv,
    actor,
    { restoreId: c.req.param("restoreId") },
    clock(),
  );
  const hostName = (h: Host | null, id: string | null) => h?.hostname ?? id ?? "—";
  const shown = r.paths.slice(0, 50);
  const paths = `${r.pathCount.toLocaleString("en")} path${r.pathCount === 1 ? "" : "s"}`;
  const onHost = hostName(target, r.targetHostId);
  const what = r.kind === "bmr"
    ? `${point ? pointLabel(point) : r.restorePointId} by ${r.mode?.toUpperCase()} boot`
    : r.kind === "image"
    ? `to ${r.targetPath} on ${onHost}`
    : r.targetPath === "/" && r.targetHostId === r.sourceHostId
    ? `${paths} to their original location on ${onHost}`
    : `${paths} to ${r.targetPath} on ${onHost}`;
  return render(
    c,
    `${KIND_LABEL[r.kind]} · ${dateTimeText(r.createdAt)}`,
    <>
      <PageHeader
        title={KIND_LABEL[r.kind]}
        subtitle={<>Requested {formatTime(r.createdAt)} · {r.priority} priority</>}
        actions={<a class="btn" href={`/backup/restore/points/${r.restorePointId}`}>Restore point</a>}
      />
      <section class="panel" id="progress">
        <h2>Progress</h2>
        <Island
          name="RestoreProgress"
          component={RestoreProgress}
          props={{
            initial: { id: r.id, status: r.status, progress: r.progress, result: r.result, error: r.error },
            headline: { kind: KIND_LABEL[r.kind], what },
          }}
        />
      </section>
      <section class="panel">
        <h2>Request</h2>
        <dl class="facts" data-testid="restore-request">
          <dt>Restore point</dt>
          <dd>
            {point
              ? <a href={`/backup/restore/points/${r.restorePointId}`}>{pointLabel(point)}</a>
              : <code title="pruned since">{r.restorePointId}</code>}
          </dd>
          <dt>Source host</dt>
          <dd>{hostName(source, r.sourceHostId)}</dd>
          {r.sourceTargetId && (
            <>
              <dt>Read from</dt>
              <dd data-testid="restore-source">
                replica on {replicaTarget?.name ?? r.sourceTargetId}
              </dd>
            </>
          )}
          {r.kind !== "bmr" && (
            <>
              <dt>Target host</dt>
              <dd>{hostName(target, r.targetHostId)}</dd>
              <dt>Target path</dt>
              <dd>
                <code>{r.targetPath ?? "—"}</code>
              </dd>
              <dt>Overwrite</dt>
              <dd>{r.overwrite ? "yes" : "no"}</dd>
            </>
          )}
          {r.kind === "bmr" && (
            <>
              <dt>Boot method</dt>
              <dd>{r.mode?.toUpperCase()}</dd>
              <dt>One-time token</dt>
              <dd data-testid="bmr-token-state">
                {r.tokenUsedAt
                  ? <>used {formatTime(r.tokenUsedAt)}</>
                  : r.tokenExpiresAt && Date.parse(r.tokenExpiresAt) < c.get("deps").clock().getTime()
                  ? <>expired {formatTime(r.tokenExpiresAt)} unused</>
                  : <>not used yet; expires {formatTime(r.tokenExpiresAt)}</>}
                <span class="hint">(shown once when created; never stored or shown again)</span>
              </dd>
            </>
          )}
          <dt>Priority</dt>
          <dd>{r.priority}</dd>
          <dt>Requested by</dt>
          <dd>{r.createdBy}</dd>
        </dl>
        {r.kind === "file" && (
          <details open={r.pathCount <= 10}>
            <summary>
              {r.pathCount.toLocaleString("en")} path{r.pathCount === 1 ? "" : "s"}
            </summary>
            <ul class="path-list" data-testid="restore-paths">
              {shown.map((p) => (
                <li key={p}>
                  <code>{p}</code>
                </li>
              ))}
            </ul>
            {r.pathCount > shown.length && <p class="hint">…and {r.pathCount - shown.length} more.</p>}
          </details>
        )}
      </section>
    </>,
  );
});
