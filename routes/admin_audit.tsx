/** Admin > Audit: every mutation, newest first, with filters and cursor pagination. */
import { Hono } from "hono";
import { DataTable, EmptyState, formatTime, PageHeader, ShortId } from "../components/ui.tsx";
import { AuditFilter } from "../domain/audit.ts";
import { getAuditPage } from "../domain/read_models/admin.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors } from "./forms.ts";
import { StaleCursorNotice } from "./paging.tsx";
import { render } from "./render.tsx";

export const adminAuditRoutes = new Hono<AppEnv>();

const OBJECT_TYPES = ["account", "org", "user", "api_token"];

adminAuditRoutes.get("/", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const raw = c.req.query();
  const parsed = AuditFilter.safeParse(raw);
  const errors = parsed.success ? {} : fieldErrors(parsed.error);
  const filter = parsed.success ? parsed.data : AuditFilter.parse({});
  const { page, staleCursor, orgs, orgName } = await getAuditPage(
    kv,
    actor,
    { filter: parsed.success ? filter : null },
    clock(),
  );
  const keep = Object.fromEntries(
    Object.entries({ ...raw, cursor: page.cursor }).filter(([, v]) => typeof v === "string" && v !== ""),
  ) as Record<string, string>;
  const active = ["actor", "action", "objectType", "orgId", "from", "to"].some((k) => raw[k]);
  return render(
    c,
    "Audit",
    (
      <>
        <PageHeader
          title="Audit log"
          subtitle="Every change, who made it and when. Entries cannot be edited."
        />
        <StaleCursorNotice show={staleCursor} />
        <form method="get" class="filters">
          <input
            type="search"
            name="actor"
            value={raw.actor ?? ""}
            placeholder="Actor (email)"
            aria-label="Actor"
          />
          <input
            type="search"
            name="action"
            value={raw.action ?? ""}
            placeholder="Action (e.g. user.)"
            aria-label="Action"
          />
          <select name="objectType" aria-label="Object type">
            <option value="">All objects</option>
            {OBJECT_TYPES.map((t) => <option key={t} value={t} selected={raw.objectType === t}>{t}</option>)}
          </select>
          <select name="orgId" aria-label="Organization">
            <option value="">All organizations</option>
            {orgs.map((o) => <option key={o.id} value={o.id} selected={raw.orgId === o.id}>{o.name}</option>)}
          </select>
          <label class="inline">
            From{" "}
            <input
              type="date"
              name="from"
              value={raw.from ?? ""}
              aria-invalid={errors.from ? "true" : undefined}
            />
          </label>
          <label class="inline">
            To{" "}
            <input type="date" name="to" value={raw.to ?? ""} aria-invalid={errors.to ? "true" : undefined} />
          </label>
          <button type="submit" class="btn">Filter</button>
          {active && <a href="/admin/audit">Clear</a>}
        </form>
        {Object.keys(errors).length > 0 && (
          <p class="form-error" role="alert">
            {Object.entries(errors).map(([k, v]) => `${k}: ${v}`).join("; ")}
          </p>
        )}
        {page.values.length === 0
          ? <EmptyState title={active ? "No entries match these filters" : "No audit entries yet"} />
          : (
            <DataTable
              class="table table--cards"
              heads={["Time", "Actor", "Action", "Object", "Organization", "Summary"]}
            >
              {page.values.map((e) => (
                <tr key={e.id}>
                  <td data-label="Time">{formatTime(e.at)}</td>
                  <td data-label="Actor">{e.actorLabel}</td>
                  <td data-label="Action">
                    <code>{e.action}</code>
                  </td>
                  <td data-label="Object">
                    {e.objectType} <ShortId id={e.objectId} />
                  </td>
                  <td data-label="Organization">{e.orgId ? orgName.get(e.orgId) ?? "—" : "—"}</td>
                  <td data-label="Summary">{e.summary}</td>
                </tr>
              ))}
            </DataTable>
          )}
        {page.cursor && (
          <nav class="pager">
            <a href={"?" + new URLSearchParams(keep).toString()}>Older entries →</a>
          </nav>
        )}
      </>
    ),
  );
});
