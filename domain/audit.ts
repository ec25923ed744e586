/** Append-only audit log. Entries are written inside the same atomic operation as their mutation. */
import { z } from "zod";
import { CursorField, CursorList } from "./cursor.ts";
import { newId } from "./ids.ts";
import type { Page } from "./kv.ts";
import { type Actor, inScope } from "./rbac.ts";
import type { AuditEntry, OrgScope } from "./types.ts";
import { auditKey, auditPrefix } from "./keys/audit.ts";
import { commitOrConflict } from "./retry.ts";
export { auditKey };

/** What a mutation says about itself. */
export interface AuditInput {
  accountId: string;
  orgId?: string | null;
  /** For objects spanning several orgs (users): who may read the entry follows this scope. */
  orgIds?: OrgScope;
  action: string;
  objectType: string;
  objectId: string;
  summary: string;
}

/** Whom an audit entry is about: one object that carries its own account and org (most objects do). */
export function auditTarget(
  objectType: string,
  object: { id: string; accountId: string; orgId: string | null },
): Pick<AuditInput, "accountId" | "orgId" | "objectType" | "objectId"> {
  return { accountId: object.accountId, orgId: object.orgId, objectType, objectId: object.id };
}

/** Adds the audit entry for a mutation to `op`; commit them together. Returns the entry. */
export function appendAudit(
  op: Deno.AtomicOperation,
  actor: Actor,
  input: AuditInput,
  now: Date,
): AuditEntry {
  const entry: AuditEntry = {
    id: newId(now),
    accountId: input.accountId,
    orgId: input.orgId ?? null,
    ...(input.orgIds !== undefined ? { orgIds: input.orgIds } : {}),
    actorId: actor.id,
    actorLabel: actor.label,
    action: input.action,
    objectType: input.objectType,
    objectId: input.objectId,
    summary: input.summary.slice(0, 500),
    at: now.toISOString(),
  };
  op.set(auditKey(input.accountId, entry.id), entry);
  return entry;
}

/**
 * Writes the audit entry of a change into the change's own atomic operation and commits both (the rule that
 * every mutation is audited in the same write); when a check fails, throws ConflictError(`conflict`) and
 * writes nothing.
 */
export async function commitAudited(
  op: Deno.AtomicOperation,
  actor: Actor,
  input: AuditInput,
  now: Date,
  conflict: string,
): Promise<AuditEntry> {
  const entry = appendAudit(op, actor, input, now);
  await commitOrConflict(op, conflict);
  return entry;
}

/** Filters of the audit page and API. Dates are inclusive days (YYYY-MM-DD, UTC). */
export const AuditFilter = z.object({
  actor: z.string().trim().max(200).optional().default(""),
  action: z.string().trim().max(100).optional().default(""),
  objectType: z.string().trim().max(50).optional().default(""),
  orgId: z.string().trim().max(40).optional().default(""),
  from: z.union([z.literal(""), z.iso.date({ error: "must be a date (YYYY-MM-DD)" })]).optional().default(""),
  to: z.union([z.literal(""), z.iso.date({ error: "must be a date (YYYY-MM-DD)" })]).optional().default(""),
  cursor: CursorField,
  limit: z.coerce.number().int().min(1).max(200).optional().default(50),
});
export type AuditFilter = z.infer<typeof AuditFilter>;

const SCAN_BUDGET = 5000;

/**
 * Lists the account's audit entries newest first, filtered and scoped to what the actor may see.
 * Scans at most SCAN_BUDGET entries per page; the cursor resumes the scan. Throws InvalidCursorError.
 */
export async function listAudit(kv: Deno.Kv, actor: Actor, filter: AuditFilter): Promise<Page<AuditEntry>> {
  if (!actor.accountId) return { values: [], cursor: "" };
  const prefix = auditPrefix(actor.accountId);
  const selector: Deno.KvListSelector = { prefix };
  // ULIDs start with the time: bound the range by the date filter.
  if (filter.from) Object.assign(selector, { start: [...prefix, ulidFloor(Date.parse(filter.from))] });
  if (filter.to) Object.assign(selector, { end: [...prefix, ulidFloor(Date.parse(filter.to) + 86_400_000)] });
  if (filter.from && !filter.to) Object.assign(selector, { end: [...prefix, "\uffff"] });
  if (filter.to && !filter.from) Object.assign(selector, { start: [...prefix, ""] });
  const iter = CursorList.fromCursor<AuditEntry>(kv, selector, filter.cursor, { reverse: true });
  const values: AuditEntry[] = [];
  let scanned = 0;
  const actorNeedle = filter.actor.toLowerCase();
  for await (const { value } of iter) {
    scanned++;
    const scope = value.orgIds !== undefined
      ? { accountId: value.accountId, orgIds: value.orgIds }
      : { accountId: value.accountId, orgId: value.orgId };
    const visible = inScope(actor, scope) &&
      (!actorNeedle || value.actorLabel.toLowerCase().includes(actorNeedle)) &&
      (!filter.action || value.action.startsWith(filter.action)) &&
      (!filter.objectType || value.objectType === filter.objectType) &&
      (!filter.orgId || value.orgId === filter.orgId);
    if (visible) values.push(value);
    if (values.length >= filter.limit || scanned >= SCAN_BUDGET) return { values, cursor: iter.cursor };
  }
  return { values, cursor: "" };
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** The smallest ULID for a millisecond time, to bound a key range. */
function ulidFloor(ms: number): string {
  let time = "";
  let rest = ms;
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[rest % 32] + time;
    rest = Math.floor(rest / 32);
  }
  return time + "0".repeat(16);
}
