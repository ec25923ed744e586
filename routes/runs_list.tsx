/**
 * Backup > Runs: the runs in your scope, newest first, filtered by status and end time: where the
 * dashboard's "last 24 hours" counts lead ("1 Failed" opens the failed runs of those 24 hours, even when
 * a later run of the same host succeeded and the failed-backups queue is empty). The same domain
 * function and filters as `GET /api/v1/runs`.
 */
import { Hono } from "hono";
import { z } from "zod";
import { RUN_TONE, RunError } from "../components/runs.tsx";
import { Badge, DataTable, EmptyState, formatTime, PageHeader } from "../components/ui.tsx";
import { type RunStatus } from "../domain/runs.ts";
import { getRunList } from "../domain/read_models/backup_pages.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { StaleCursorNotice } from "./paging.tsx";
import { render } from "./render.tsx";

export const runListRoutes = new Hono<AppEnv>();

const STATUSES = ["success", "warning", "failed", "running", "pending", "skipped"] as const;

/** The page's filters; a value that does not parse is dropped (the page shows what it can). */
const RunListQuery = z.object({
  status: z.enum(STATUSES).optional().catch(undefined),
  endedAfter: z.iso.datetime({ offset: true }).optional().catch(undefined),
  cursor: z.string().max(100).optional().catch(undefined),
});

const KIND_LABELS: Record<string, string> = {
  full: "full",
  incremental: "incremental",
  synthetic_full: "synthetic full",
};

runListRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const query = RunListQuery.parse(c.req.query());
  const filter = { status: query.status as RunStatus | undefined, endedAfter: query.endedAfter };
  const { page, staleCursor, names } = await getRunList(kv, actor, { filter, cursor: query.cursor }, clock());
  const keep: Record<string, string> = {
    ...(query.status ? { status: query.status } : {}),
    ...(query.endedAfter ? { endedAfter: query.endedAfter } : {}),
  };
  const what = query.status ? `${query.status[0].toUpperCase()}${query.status.slice(1)} runs` : "Runs";
  return render(
    c,
    what,
    <>
      <PageHeader
        title={what}
        subtitle={query.endedAfter
          ? <>Ended since {formatTime(query.endedAfter)}, newest first.</>
          : "Every backup run in your scope, newest first."}
      />
      <form method="get" action="/backup/runs" class="filters" data-testid="run-filters">
        <select name="status" aria-label="Status">
          <option value="">Any status</option>
          {STATUSES.map((s) => <option key={s} value={s} selected={query.status === s}>{s}</option>)}
        </select>
        {query.endedAfter && <input type="hidden" name="endedAfter" value={query.endedAfter} />}
        <button type="submit" class="btn">Filter</button>
        {Object.keys(keep).length > 0 && <a href="/backup/runs">All runs</a>}
      </form>
      <StaleCursorNotice show={staleCursor} />
      {page.values.length === 0
        ? (
          <EmptyState title={page.cursor ? "No matching runs in this stretch" : "No runs match"}>
            {page.cursor
              ? <a href={`?${new URLSearchParams({ ...keep, cursor: page.cursor })}`}>Look further back →</a>
              : <a href="/backup/jobs">All jobs</a>}
          </EmptyState>
        )
        : (
          <DataTable class="table" testid="runs-table" heads={["Status", "Job", "Host", "Kind", "Ended"]}>
            {page.values.map((r) => (
              <tr key={r.id} data-run={r.id}>
                <td>
                  <a href={`/backup/runs/${r.id}`} title="Run details">
                    <Badge tone={RUN_TONE[r.status] ?? "muted"}>{r.status}</Badge>
                  </a>
                  {r.error && (
                    <div class="hint">
                      <RunError run={r} />
                    </div>
                  )}
                </td>
                <td>
                  <a href={`/backup/jobs/${r.policyId}`}>
                    {names.policies.get(r.policyId) ?? "(deleted job)"}
                  </a>
                </td>
                <td>{r.hostId ? names.hosts.get(r.hostId) ?? "(unknown host)" : "—"}</td>
                <td>
                  {KIND_LABELS[r.kind] ?? r.kind}
                  {r.trigger !== "schedule" ? ` (${r.trigger.replace("_", "-")})` : ""}
                </td>
                <td class="nowrap">{formatTime(r.endedAt)}</td>
              </tr>
            ))}
          </DataTable>
        )}
      {page.values.length > 0 && page.cursor && (
        <nav class="pager" aria-label="Pagination">
          <a href={`?${new URLSearchParams({ ...keep, cursor: page.cursor })}`}>Older runs →</a>
        </nav>
      )}
    </>,
  );
});
