/** Backup > Protected Objects: everything covered by backup, its last backup and its RPO (guide, "Protected Objects"). */
import { Hono } from "hono";
import {
  Badge,
  DataTable,
  EmptyState,
  formatDuration,
  formatTime,
  PageHeader,
  type Tone,
} from "../components/ui.tsx";
import { hostScope } from "../domain/hosts.ts";
import { PLATFORM_TYPE_LABELS } from "../domain/platforms.ts";
import { inScope } from "../domain/rbac.ts";
import {
  breachDurationMs,
  isRpoBreached,
  LAST_BACKUP_STATUSES,
  PROTECTED_SCAN_LIMIT,
  PROTECTED_TYPES,
  ProtectedFilter,
  type ProtectedObject,
  PROTECTION_STATES,
} from "../domain/protected.ts";
import { getProtectedPage } from "../domain/read_models/backup_pages.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { StaleCursorNotice } from "./paging.tsx";
import { render } from "./render.tsx";

export const protectedRoutes = new Hono<AppEnv>();

const STATUS_TONE: Record<ProtectedObject["lastBackupStatus"], Tone> = {
  success: "ok",
  warning: "warn",
  failed: "bad",
  never: "muted",
};

protectedRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const now = clock();
  const filter = ProtectedFilter.parse(c.req.query());
  // Hosts can number in the tens of thousands: the host filter comes from links (a host's page) and
  // shows as a removable chip, and the search box matches hostnames.
  const { page, staleCursor, orgs, engines, host, platforms, platformName, orgName, engineName } =
    await getProtectedPage(kv, actor, { filter }, now);
  const keep: Record<string, string> = {};
  for (
    const k of [
      "q",
      "orgId",
      "type",
      "hostId",
      "source",
      "lastBackupStatus",
      "protection",
      "rpoBreach",
    ] as const
  ) {
    if (filter[k]) keep[k] = String(filter[k]);
  }
  if (filter.limit !== 50) keep.limit = String(filter.limit);
  const filtered = Object.keys(keep).length > 0;
  if (staleCursor) filter.cursor = "";
  return render(
    c,
    "Protected Objects",
    <>
      <PageHeader
        title="Protected Objects"
        subtitle="Everything covered by backup. An object is in RPO breach when the time since its last successful backup exceeds its RPO."
      />
      <StaleCursorNotice show={staleCursor} />
      <form method="get" class="filters" aria-label="Filter protected objects">
        <input type="search" name="q" value={filter.q} placeholder="Object or hostname" aria-label="Search" />
        <select name="orgId" aria-label="Organization">
          <option value="">Any organization</option>
          {orgs.map((o) => (
            <option key={o.id} value={o.id} selected={filter.orgId === o.id}>{o.name}</option>
          ))}
        </select>
        <select name="type" aria-label="Object type">
          <option value="">Any type</option>
          {PROTECTED_TYPES.map((t) => <option key={t} value={t} selected={filter.type === t}>{t}</option>)}
        </select>
        <select name="rpoBreach" aria-label="RPO breach">
          <option value="">RPO: any</option>
          <option value="true" selected={filter.rpoBreach === "true"}>In breach</option>
          <option value="false" selected={filter.rpoBreach === "false"}>Within RPO</option>
        </select>
        <select name="source" aria-label="Source">
          <option value="">Any source</option>
          {engines.values.map((e) => (
            <option key={e.id} value={`bes:${e.id}`} selected={filter.source === `bes:${e.id}`}>
              BES {e.name}
            </option>
          ))}
          {platforms.map((p) => (
            <option key={p.id} value={`platform:${p.id}`} selected={filter.source === `platform:${p.id}`}>
              {PLATFORM_TYPE_LABELS[p.type]} {p.name}
            </option>
          ))}
        </select>
        {filter.hostId && (
          <span class="chip">
            <input type="hidden" name="hostId" value={filter.hostId} />
            Host: {host && inScope(actor, hostScope(host)) ? host.hostname : filter.hostId}{" "}
            <a
              href={"?" + new URLSearchParams({ ...keep, hostId: "" }).toString()}
              aria-label="Remove host filter"
            >
              ×
            </a>
          </span>
        )}
        <select name="lastBackupStatus" aria-label="Last backup status">
          <option value="">Any last status</option>
          {LAST_BACKUP_STATUSES.map((s) => (
            <option key={s} value={s} selected={filter.lastBackupStatus === s}>{s}</option>
          ))}
        </select>
        <select name="protection" aria-label="Protection">
          <option value="">Any protection</option>
          {PROTECTION_STATES.map((s) => (
            <option key={s} value={s} selected={filter.protection === s}>{s}</option>
          ))}
        </select>
        <button type="submit" class="btn">Filter</button>
        {filtered && <a href="/backup/protected">Clear</a>}
      </form>
      {page.values.length === 0
        ? (
          <EmptyState title={filtered ? "No protected objects match" : "No protected objects yet"}>
            {filtered
              ? page.partial ? "None in the part scanned so far; continue below." : "Try fewer filters."
              : "Assign a host to a backup policy (Backup > Hosts), or register a platform (Backup > Platforms), and its objects appear here."}
          </EmptyState>
        )
        : (
          <DataTable
            class="table table--cards"
            id="protected-objects"
            heads={["Object", "Type", "Organization", "Source", "Last backup", "Status", "RPO", "Protection"]}
          >
            {page.values.map((o) => {
              const breached = isRpoBreached(o, now);
              return (
                <tr key={o.id} data-id={o.id}>
                  <td data-label="Object">
                    {o.source.kind === "bes"
                      ? <a href={`/backup/hosts/${o.hostId}`}>{o.name}</a>
                      : (
                        <span title={`${o.source.vendorType}, id ${o.source.vendorObjectId}`}>
                          {o.name}
                        </span>
                      )}
                  </td>
                  <td data-label="Type">{o.type}</td>
                  <td data-label="Organization">{orgName.get(o.orgId) ?? o.orgId}</td>
                  <td data-label="Source">
                    {o.source.kind === "bes"
                      ? `BES ${engineName.get(o.source.besId) ?? o.source.besId}`
                      : (
                        <a href={`/backup/platforms/${o.source.platformId}`}>
                          {platformName.get(o.source.platformId) ?? `${o.source.platformType} platform`}
                        </a>
                      )}
                  </td>
                  <td data-label="Last backup">{formatTime(o.lastBackupAt)}</td>
                  <td class="cell-status" data-label="Status">
                    <Badge tone={STATUS_TONE[o.lastBackupStatus]}>{o.lastBackupStatus}</Badge>
                  </td>
                  <td data-label="RPO">
                    {o.rpoHours} h {breached
                      ? <Badge tone="bad">breach {formatDuration(breachDurationMs(o, now))}</Badge>
                      : o.protection === "active"
                      ? <Badge tone="ok">within</Badge>
                      : null}
                  </td>
                  <td data-label="Protection">{o.protection}</td>
                </tr>
              );
            })}
          </DataTable>
        )}
      <nav class="pager" aria-label="Pagination">
        <span>
          {page.values.length}{" "}
          shown{page.partial
            ? ` (stopped after scanning ${PROTECTED_SCAN_LIMIT.toLocaleString("en-US")} entries)`
            : ""}
        </span>
        {filter.cursor && <a href={"?" + new URLSearchParams(keep).toString()}>← First page</a>}
        {page.cursor && (
          <a href={"?" + new URLSearchParams({ ...keep, cursor: page.cursor }).toString()}>Next →</a>
        )}
      </nav>
    </>,
  );
});
