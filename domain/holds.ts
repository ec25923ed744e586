/**
 * Legal holds: an operator with `backup.hold` places a hold on restore points — every point of a host,
 * every point of a policy, or one point — with a reason and a case reference. A held point is never
 * pruned or expired: retention keeps it (and the chain it depends on) with the hold as the reason
 * (`holdGuard` → `RetentionPoint.holds`), the prune job sent to a BES never names it, and expiring it
 * by hand is refused. Releasing a hold makes its points ordinary again (four-eyes when enabled:
 * approvals.ts gates `legal_hold.release`).
 *
 * Consistency: every placement bumps the account's hold epoch (`holdEpochKey`) in the same atomic
 * operation as the hold. Whoever expires points (the retention job, a hand expiry) reads the holds
 * and the epoch first and `check()`s the epoch in the operation that marks points expired, so a hold
 * placed while retention was planning makes that write fail instead of pruning a point just held.
 *
 * Holds and BES deletion: whichever comes first wins, the other is refused with a ConflictError naming
 * it. A BES whose targets hold a held point is not deleted (`refuseIfTargetsHoldHeldPoints`, the case
 * named; `markEngineDeleting` checks the hold epoch). A hold that would cover a point on a BES already
 * being deleted is refused naming the BES (`refuseIfBesDeletionCovers`): its cascade cannot be undone,
 * and a hold that looked placed while the data it keeps is being deleted would be a silent lie. The
 * placement reads `besDeletionEpochKey` (set by every deletion start) before looking and `check()`s it
 * in its write, so a deletion started in between makes it retry and refuse.
 */
import { restorePointKey } from "./keys/restore.ts";
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { ConflictError, NotFoundError } from "./errors.ts";
import { type Host, hostKey, hostScope } from "./hosts.ts";
import { newId } from "./ids.ts";
import { getManyValues, withRetry } from "./kv.ts";
import type { Policy } from "./policies.ts";
import { policyKey, retiredPolicyKey } from "./policy_keys.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import {
  activeHoldKey,
  activeHoldsPrefix,
  besDeletionEpochKey,
  holdEpochKey,
  holdKey,
  holdsByAccountKey,
} from "./keys/holds.ts";
import { pointsByTargetPrefix } from "./keys/repositories.ts";
import { deletingEnginesPrefix, engineKey } from "./keys/engines.ts";
import { targetsByBesPrefix } from "./keys/storage.ts";
export { activeHoldKey, holdEpochKey, holdKey, holdsByAccountKey };

export const HOLD_SCOPES = ["host", "policy", "point"] as const;
export type HoldScope = (typeof HOLD_SCOPES)[number];

/** A legal hold as stored. */
export interface LegalHold {
  id: string;
  accountId: string;
  orgId: string | null;
  scope: HoldScope;
  /** The host, policy or restore point id the hold covers. */
  subjectId: string;
  /** The hostname, policy name or point description at the time the hold was placed. */
  subjectLabel: string;
  reason: string;
  caseReference: string;
  status: "active" | "released";
  placedById: string;
  placedByLabel: string;
  placedAt: string;
  releasedById: string | null;
  releasedByLabel: string | null;
  releasedAt: string | null;
}

/** A new hold: what it covers, why, and under which case. One schema for the form, the API and the domain. */
export const HoldInput = z.object({
  scope: z.enum(HOLD_SCOPES, { error: "must be host, policy or point" }),
  subjectId: z.string().trim().min(1, "is required").max(40, "must be at most 40 characters"),
  reason: z.string().trim().min(1, "is required").max(500, "must be at most 500 characters"),
  caseReference: z.string().trim().min(1, "is required").max(100, "must be at most 100 characters"),
});
export type HoldInput = z.input<typeof HoldInput>;

/** Which holds a list shows. */
export const HoldFilter = z.object({
  status: z.enum(["active", "released", "all"], { error: "must be active, released or all" }).default(
    "active",
  ),
});
export type HoldFilter = z.input<typeof HoldFilter>;

/** The restore point fields a hold matches on. */
export interface HeldCandidate {
  id: string;
  policyId: string;
  hostId: string | null;
}

/** True when `hold` covers the point. */
export function holdCovers(hold: Pick<LegalHold, "scope" | "subjectId">, point: HeldCandidate): boolean {
  switch (hold.scope) {
    case "host":
      return point.hostId === hold.subjectId;
    case "policy":
      return point.policyId === hold.subjectId;
    case "point":
      return point.id === hold.subjectId;
  }
}

/** The retention reason a hold gives the points it covers. */
export function holdReason(hold: Pick<LegalHold, "caseReference">): string {
  return `legal hold ${hold.caseReference}`;
}

/** An account's active holds as read at one moment, and the epoch to check when acting on them. */
export interface HoldGuard {
  holds: LegalHold[];
  /** The reasons (`legal hold <case>`) of the holds covering the point; empty when none does. */
  reasonsFor(point: HeldCandidate): string[];
  /** Adds the epoch check to `op`: the write fails if a hold was placed since the guard was read. */
  check(op: Deno.AtomicOperation): Deno.AtomicOperation;
}

/** Reads an account's active holds and hold epoch (see the module notes). */
export async function holdGuard(kv: Deno.Kv, accountId: string): Promise<HoldGuard> {
  const epoch = await kv.get(holdEpochKey(accountId));
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: activeHoldsPrefix(accountId) })) {
    keys.push(holdKey(e.value));
  }
  const holds = (await getManyValues<LegalHold>(kv, keys)).filter((h) => h.status === "active");
  return {
    holds,
    reasonsFor: (point) => [...new Set(holds.filter((h) => holdCovers(h, point)).map(holdReason))],
    check: (op) => op.check(epoch),
  };
}

/** The subject a hold covers, with its tenancy and a label. Throws NotFoundError outside the actor's scope. */
async function resolveSubject(
  kv: Deno.Kv,
  actor: Actor,
  scope: HoldScope,
  id: string,
): Promise<{ accountId: string; orgId: string | null; label: string; entry?: Deno.KvEntryMaybe<unknown> }> {
  const notFound = () =>
    new NotFoundError(`No ${scope === "point" ? "restore point" : scope} ${id} in your scope`);
  if (scope === "host") {
    const host = (await kv.get<Host>(hostKey(id))).value;
    if (!host || !inScope(actor, hostScope(host))) throw notFound();
    return { ...hostScope(host), label: host.hostname };
  }
  const policyOf = async (policyId: string) => {
    const [live, retired] = await kv.getMany<[Policy, Policy]>([
      policyKey(policyId),
      retiredPolicyKey(policyId),
    ]);
    return live.value ?? retired.value;
  };
  if (scope === "policy") {
    const policy = await policyOf(id);
    if (!policy || !inScope(actor, { accountId: policy.accountId, orgId: policy.orgId })) throw notFound();
    return { accountId: policy.accountId, orgId: policy.orgId, label: policy.name };
  }
  const entry = await kv.get<
    { id: string; policyId: string; hostId: string | null; completedAt: string; status: string }
  >(restorePointKey(id));
  const point = entry.value;
  const policy = point ? await policyOf(point.policyId) : null;
  if (!point || !policy || !inScope(actor, { accountId: policy.accountId, orgId: policy.orgId })) {
    throw notFound();
  }
  if (point.hostId) {
    const host = (await kv.get<Host>(hostKey(point.hostId))).value;
    if (host && !inScope(actor, hostScope(host))) throw notFound();
  }
  if (point.status === "expired" || point.status === "failed") {
    throw new ConflictError(`Restore point ${point.id} is ${point.status}: it holds no data to keep`);
  }
  return {
    accountId: policy.accountId,
    orgId: policy.orgId,
    label: `restore point ${point.id} of ${point.completedAt} (${policy.name})`,
    // Checked in the hold's write: retention expiring the point meanwhile makes the placement retry (and refuse).
    entry,
  };
}

/**
 * Places a legal hold, with its audit entry and the epoch bump, in one atomic operation. Needs
 * `backup.hold` on the subject. Throws ZodError for bad input, NotFoundError for a subject out of scope,
 * ForbiddenError without the permission, ConflictError for a single point already expired or failed.
 */
export async function placeHold(kv: Deno.Kv, actor: Actor, input: HoldInput, now: Date): Promise<LegalHold> {
  const data = HoldInput.parse(input);
  return await withRetry(async () => {
    const subject = await resolveSubject(kv, actor, data.scope, data.subjectId);
    authorize(actor, "backup.hold", subject);
    // Read before looking for BESes being deleted, checked in the write (see the module notes).
    const deletions = await kv.get(besDeletionEpochKey(subject.accountId));
    await refuseIfBesDeletionCovers(kv, subject.accountId, data);
    const hold: LegalHold = {
      id: newId(now),
      accountId: subject.accountId,
      orgId: subject.orgId,
      scope: data.scope,
      subjectId: data.subjectId,
      subjectLabel: subject.label,
      reason: data.reason,
      caseReference: data.caseReference,
      status: "active",
      placedById: actor.id,
      placedByLabel: actor.label,
      placedAt: now.toISOString(),
      releasedById: null,
      releasedByLabel: null,
      releasedAt: null,
    };
    const op = kv.atomic()
      .check({ key: holdKey(hold.id), versionstamp: null })
      .set(holdKey(hold.id), hold)
      .set(holdsByAccountKey(hold.accountId, hold.id), hold.id)
      .set(activeHoldKey(hold.accountId, hold.id), hold.id)
      .set(holdEpochKey(hold.accountId), { at: hold.placedAt, holdId: hold.id })
      .check(deletions);
    if (subject.entry) op.check(subject.entry);
    appendAudit(op, actor, {
      accountId: hold.accountId,
      orgId: hold.orgId,
      action: "legal_hold.place",
      objectType: "legal_hold",
      objectId: hold.id,
      summary:
        `Placed legal hold ${hold.caseReference} on ${hold.scope} ${hold.subjectLabel}: ${hold.reason}`,
    }, now);
    return (await op.commit()).ok ? { value: hold } : null;
  });
}

/** The hold if the actor may see it. Throws NotFoundError otherwise. */
export async function requireHold(kv: Deno.Kv, actor: Actor, id: string): Promise<LegalHold> {
  const hold = /^[0-9A-Z]{26}$/.test(id) ? (await kv.get<LegalHold>(holdKey(id))).value : null;
  if (!hold || !inScope(actor, hold)) throw new NotFoundError(`Legal hold ${id.slice(0, 40)} not found`);
  return hold;
}

/**
 * Releases an active hold (its points become ordinary: the next retention run may expire them), with
 * its audit entry, in one atomic operation. Needs `backup.hold`. Callers gate it with four-eyes
 * (`requestIfFourEyes(kind "legal_hold.release")`). Throws NotFoundError, ForbiddenError, ConflictError
 * when the hold is already released.
 */
export async function releaseHold(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<LegalHold> {
  return await withRetry(async () => {
    const entry = await kv.get<LegalHold>(holdKey(id));
    const hold = entry.value;
    if (!hold || !inScope(actor, hold)) throw new NotFoundError(`Legal hold ${id.slice(0, 40)} not found`);
    authorize(actor, "backup.hold", hold);
    if (hold.status !== "active") {
      throw new ConflictError(`Legal hold ${hold.caseReference} is already released`);
    }
    const released: LegalHold = {
      ...hold,
      status: "released",
      releasedById: actor.id,
      releasedByLabel: actor.label,
      releasedAt: now.toISOString(),
    };
    const op = kv.atomic().check(entry).set(holdKey(id), released).delete(activeHoldKey(hold.accountId, id));
    appendAudit(op, actor, {
      accountId: hold.accountId,
      orgId: hold.orgId,
      action: "legal_hold.release",
      objectType: "legal_hold",
      objectId: id,
      summary: `Released legal hold ${hold.caseReference} on ${hold.scope} ${hold.subjectLabel}`,
    }, now);
    return (await op.commit()).ok ? { value: released } : null;
  });
}

/** The account's holds in the actor's scope, newest first (a site holds few: no paging). */
export async function listHolds(kv: Deno.Kv, actor: Actor, filter: HoldFilter = {}): Promise<LegalHold[]> {
  if (!actor.accountId) return [];
  const { status } = HoldFilter.parse(filter);
  const keys: Deno.KvKey[] = [];
  const prefix = status === "active" ? "legal_holds_active" : "legal_holds_by_account";
  for await (
    const e of kv.list<string>({ prefix: [prefix, actor.accountId] }, { reverse: true, limit: 1000 })
  ) {
    keys.push(holdKey(e.value));
  }
  return (await getManyValues<LegalHold>(kv, keys)).filter((h) =>
    inScope(actor, h) && (status === "all" || h.status === status)
  );
}

/**
 * Throws a ConflictError naming the holds when any active hold covers the point (hand expiry's
 * refusal). Returns the guard so the caller can `check()` its epoch in the expiring write.
 */
export async function refuseIfHeld(kv: Deno.Kv, accountId: string, point: HeldCandidate): Promise<HoldGuard> {
  const guard = await holdGuard(kv, accountId);
  const covering = guard.holds.filter((h) => holdCovers(h, point));
  if (covering.length) {
    throw new ConflictError(
      `Restore point ${point.id} is under legal hold (${
        covering.map((h) => `case ${h.caseReference}: ${h.reason}`).join("; ")
      }): it cannot be expired until the hold is released`,
    );
  }
  return guard;
}

/** The active holds in the actor's scope that cover the point (what its page shows), oldest first. */
export async function holdsCoveringPoint(
  kv: Deno.Kv,
  actor: Actor,
  point: HeldCandidate,
): Promise<LegalHold[]> {
  if (!actor.accountId) return [];
  const guard = await holdGuard(kv, actor.accountId);
  return guard.holds.filter((h) => inScope(actor, h) && holdCovers(h, point));
}

/**
 * The active holds in the actor's scope that cover some restore point of the host: a hold on the host,
 * on a policy the host is assigned to (`policyIds`), or on one of the host's points. Oldest first.
 */
export async function holdsCoveringHost(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
  policyIds: string[],
): Promise<LegalHold[]> {
  if (!actor.accountId) return [];
  const guard = await holdGuard(kv, actor.accountId);
  const visible = guard.holds.filter((h) => inScope(actor, h));
  const pointHolds = visible.filter((h) => h.scope === "point");
  const points = await getManyValues<{ id: string; hostId: string | null }>(
    kv,
    pointHolds.map((h) => restorePointKey(h.subjectId)),
  );
  const ofHost = new Set(points.filter((p) => p.hostId === hostId).map((p) => p.id));
  const heldPoints = new Set(pointHolds.filter((h) => ofHost.has(h.subjectId)).map((h) => h.id));
  return visible.filter((h) =>
    (h.scope === "host" && h.subjectId === hostId) ||
    (h.scope === "policy" && policyIds.includes(h.subjectId)) ||
    heldPoints.has(h.id)
  );
}

/**
 * Refuses (ConflictError naming each hold's case reference) to delete `what` — a BES and everything
 * under it — when a restore point its storage targets hold (not expired or failed) is under an active
 * legal hold: the deletion would drop the targets (and their credentials) the held data is read
 * through, and held points are never pruned or expired. Returns the guard so the deleting write can
 * `check()` the hold epoch (a hold placed meanwhile makes it retry and refuse).
 */
export async function refuseIfTargetsHoldHeldPoints(
  kv: Deno.Kv,
  accountId: string,
  what: string,
  targetIds: string[],
): Promise<HoldGuard> {
  const guard = await holdGuard(kv, accountId);
  if (!guard.holds.length) return guard;
  const { covering, heldPoints } = await heldPointsOnTargets(kv, guard.holds, targetIds);
  if (!heldPoints.length) return guard;
  const n = heldPoints.length;
  throw new ConflictError(
    `${what} cannot be deleted: ${n} restore point${n === 1 ? "" : "s"} on it ${
      n === 1 ? "is" : "are"
    } under legal hold (${
      [...covering.values()].map((h) => `case ${h.caseReference}: ${h.reason}`).join("; ")
    }; for example ${heldPoints.slice(0, 3).join(", ")}). Held points are never pruned or expired: ` +
      "release the hold first. Nothing was changed.",
  );
}

/** The points (not expired or failed) on the targets that `holds` cover, and the holds covering them. */
async function heldPointsOnTargets(
  kv: Deno.Kv,
  holds: Array<Pick<LegalHold, "id" | "scope" | "subjectId">>,
  targetIds: string[],
): Promise<{ covering: Map<string, LegalHold>; heldPoints: string[] }> {
  const covering = new Map<string, LegalHold>();
  const heldPoints: string[] = [];
  for (const targetId of new Set(targetIds)) {
    const ids: string[] = [];
    for await (const e of kv.list<string>({ prefix: pointsByTargetPrefix(targetId) })) {
      ids.push(e.value);
    }
    const points = await getManyValues<HeldCandidate & { status: string }>(
      kv,
      ids.map((id) => restorePointKey(id)),
    );
    for (const p of points) {
      if (p.status === "expired" || p.status === "failed") continue;
      const covers = holds.filter((h) => holdCovers(h, p));
      if (!covers.length) continue;
      heldPoints.push(p.id);
      for (const h of covers) covering.set(h.id, h as LegalHold);
    }
  }
  return { covering, heldPoints };
}

/**
 * Refuses (ConflictError naming the BES) a hold that would cover a restore point on a storage target of
 * a BES of the account being deleted (status `deleting`): the deletion's cascade removes those points
 * and cannot be stopped, so the hold could not keep them. Reads the BESes being deleted (usually none).
 */
export async function refuseIfBesDeletionCovers(
  kv: Deno.Kv,
  accountId: string,
  hold: Pick<LegalHold, "scope" | "subjectId" | "caseReference">,
): Promise<void> {
  const ids: string[] = [];
  for await (const e of kv.list({ prefix: deletingEnginesPrefix() })) ids.push(String(e.key[1]));
  if (!ids.length) return;
  const engines = await getManyValues<
    { id: string; name: string; accountId: string; status: string; storageTargetIds?: string[] }
  >(kv, ids.map(engineKey));
  for (const engine of engines) {
    if (engine.accountId !== accountId || engine.status !== "deleting") continue;
    const targetIds = [...(engine.storageTargetIds ?? [])];
    for await (const e of kv.list({ prefix: targetsByBesPrefix(engine.id) })) {
      targetIds.push(String(e.key[2]));
    }
    const { heldPoints } = await heldPointsOnTargets(kv, [{ id: "new", ...hold }], targetIds);
    if (!heldPoints.length) continue;
    const n = heldPoints.length;
    throw new ConflictError(
      `Legal hold ${hold.caseReference} cannot be placed: BES ${engine.name} is being deleted and ${n} ` +
        `restore point${n === 1 ? "" : "s"} the hold would cover ${
          n === 1 ? "is" : "are"
        } on it (for example ${
          heldPoints.slice(0, 3).join(", ")
        }); its deletion cannot be stopped once started. Nothing was changed.`,
    );
  }
}
