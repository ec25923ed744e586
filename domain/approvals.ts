/**
 * Four-eyes approval of destructive actions. An account admin turns it on (off by default) with a time
 * limit; from then on deleting a BES, a storage target or a policy, expiring a restore point early,
 * turning a policy's encryption off or lowering its retention, rotating a registration secret or a
 * vault key, and releasing a legal hold become approval requests instead of running. The request
 * stores the action's kind and its validated input; a second, different user holding the permission
 * the action needs approves it within the time limit, and the action then runs exactly once, as the
 * approver. A refused or expired request changes nothing.
 *
 * Exactly once: approving claims the request — `pending` → `executing`, checked against the request's
 * versionstamp in one atomic operation with the approval's audit entry — and only the claimer runs the
 * action; a second approver, a refusal or the expiry job racing it loses the check and changes nothing.
 * The outcome (`executed` or `failed`, with the message) is written afterwards. A process that dies
 * between the claim and the outcome leaves the request `executing`; the expiry job marks it
 * `interrupted` after `INTERRUPTED_AFTER_MS` (the action may or may not have run: it is never re-run,
 * the operator checks the object and requests again if needed).
 *
 * Routes call `requestIfFourEyes` before the direct domain call: null means "run it now" (four-eyes off,
 * the change is not a gated one — e.g. a policy edit that lowers nothing — or a system actor such as
 * the CLI, whose operator holds the database anyway); otherwise the request was created and the route
 * answers 202 (API) or redirects to the requests page.
 */
import { z } from "zod";
import { appendAudit, commitAudited } from "./audit.ts";
import { ConflictError, ForbiddenError, NotFoundError } from "./errors.ts";
import { deleteEngine, requireEngine } from "./engines.ts";
import { refuseIfHeld, releaseHold, requireHold } from "./holds.ts";
import { newId } from "./ids.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { kekReference } from "./keks.ts";
import { rotateKek } from "./namespace_keys.ts";
import {
  deletePolicy,
  patchPolicy,
  type Policy,
  policyAsInput,
  policyKey,
  PolicyPatchInput,
  PolicyUpdateInput,
  requirePolicy,
  retiredPolicyKey,
  updatePolicy,
} from "./policies.ts";
import type { RestorePoint } from "./restore_points.ts";
import { restorePointKey } from "./keys/restore.ts";
import { type Actor, authorize, can, inScope, systemActor } from "./rbac.ts";
import { authorizeExpireArchived, ExpireArchivedInput, expireArchivedPoint } from "./archive.ts";
import { deleteTarget, requireTarget } from "./storage.ts";
import { getAccount, requireOrg, rotateAccountSecret, rotateOrgSecret } from "./tenancy.ts";
import type { Permission } from "./types.ts";
import {
  approvalKey,
  approvalsByAccountKey,
  approvalsByAccountPrefix,
  fourEyesSettingsKey,
  openApprovalKey,
  openApprovalsPrefix,
} from "./keys/approvals.ts";
export { approvalKey, approvalsByAccountKey, fourEyesSettingsKey, openApprovalKey };

/** The actions four-eyes gates. */
export const APPROVAL_KINDS = [
  "engine.delete",
  "target.delete",
  "policy.delete",
  "policy.update",
  "restore_point.expire",
  "org_secret.rotate",
  "account_secret.rotate",
  "pam_vault_key.rotate",
  "legal_hold.release",
  "four_eyes.disable",
] as const;
export type ApprovalKind = (typeof APPROVAL_KINDS)[number];

/** What each kind does, in words (pages and audit). */
export const APPROVAL_KIND_LABELS: Record<ApprovalKind, string> = {
  "engine.delete": "Delete a BES (and its targets and policies)",
  "target.delete": "Delete a storage target",
  "policy.delete": "Delete a policy",
  "policy.update": "Turn encryption off or lower retention",
  "restore_point.expire": "Expire a restore point early",
  "org_secret.rotate": "Rotate an organization's registration secret",
  "account_secret.rotate": "Rotate the account registration secret",
  "pam_vault_key.rotate": "Rotate an organization's PAM vault key",
  "legal_hold.release": "Release a legal hold",
  "four_eyes.disable": "Turn four-eyes approval off",
};

export const APPROVAL_STATUSES = [
  "pending",
  "executing",
  "executed",
  "failed",
  "refused",
  "expired",
  "interrupted",
] as const;
export type ApprovalStatus = (typeof APPROVAL_STATUSES)[number];

/** After this long in `executing` (the approver's process died mid-action), the request is `interrupted`. */
export const INTERRUPTED_AFTER_MS = 15 * 60_000;

/** The account's four-eyes setting. One schema for the admin form, the API and the domain. */
export const FourEyesSettingsInput = z.object({
  enabled: z.boolean(),
  ttlHours: z.coerce.number().int("must be a whole number of hours").min(1, "must be 1–168")
    .max(168, "must be 1–168").default(24),
});
export type FourEyesSettingsInput = z.input<typeof FourEyesSettingsInput>;

export interface FourEyesSettings {
  accountId: string;
  enabled: boolean;
  /** How long a request waits for its approval. */
  ttlHours: number;
  updatedAt: string | null;
  updatedBy: string | null;
}

/** One approval request as stored. `input` is the action's validated input (never a secret). */
export interface ApprovalRequest {
  id: string;
  accountId: string;
  orgId: string | null;
  kind: ApprovalKind;
  input: Record<string, unknown>;
  /** The permission the approver needs (on the object's scope). */
  permission: Permission;
  objectType: string;
  objectId: string;
  summary: string;
  status: ApprovalStatus;
  requestedById: string;
  requestedByLabel: string;
  requestedAt: string;
  expiresAt: string;
  decidedById: string | null;
  decidedByLabel: string | null;
  decidedAt: string | null;
  /** The refusal's note, or what the action did / why it failed. */
  outcome: string | null;
}

/** A refusal's optional note. */
export const RefuseInput = z.object({
  note: z.string().trim().max(500, "must be at most 500 characters").default(""),
});
export type RefuseInput = z.input<typeof RefuseInput>;

/** Which requests a list shows: waiting for a decision, or decided. */
export const ApprovalFilter = z.object({
  status: z.enum(["pending", "decided"], { error: "must be pending or decided" }).default("pending"),
});
export type ApprovalFilter = z.input<typeof ApprovalFilter>;

/** The account's setting (off, 24 hours, when never set). */
export async function getFourEyesSettings(kv: Deno.Kv, accountId: string): Promise<FourEyesSettings> {
  return (await kv.get<FourEyesSettings>(fourEyesSettingsKey(accountId))).value ??
    { accountId, enabled: false, ttlHours: 24, updatedAt: null, updatedBy: null };
}

/** Changes the account's four-eyes setting, with its audit entry. Needs admin over the whole account. */
export async function setFourEyesSettings(
  kv: Deno.Kv,
  actor: Actor,
  input: FourEyesSettingsInput,
  now: Date,
): Promise<FourEyesSettings> {
  const data = FourEyesSettingsInput.parse(input);
  const accountId = actor.accountId;
  if (!accountId) throw new ForbiddenError("Four-eyes is set per account; this actor has none");
  authorize(actor, "admin", { accountId, orgId: null });
  const settings: FourEyesSettings = {
    accountId,
    ...data,
    updatedAt: now.toISOString(),
    updatedBy: actor.label,
  };
  const op = kv.atomic().set(fourEyesSettingsKey(accountId), settings);
  await commitAudited(
    op,
    actor,
    {
      accountId,
      action: "four_eyes.settings",
      objectType: "account",
      objectId: accountId,
      summary: data.enabled
        ? `Turned four-eyes approval on (requests expire after ${data.ttlHours} h)`
        : "Turned four-eyes approval off",
    },
    now,
    "The setting could not be saved; try again",
  );
  return settings;
}

/** What an action needs and touches, as `describe` works it out for a requester. */
interface Described {
  accountId: string;
  orgId: string | null;
  permission: Permission;
  objectType: string;
  objectId: string;
  summary: string;
}

/** What running an approved action produced: a sentence, and a new secret to show once (rotations). */
export interface ActionOutcome {
  message: string;
  secret?: string;
}

/** What the action runners need besides the KV. */
export interface ActionContext {
  now: Date;
  masterKey: Uint8Array;
}

interface ActionSpec {
  input: z.ZodType<Record<string, unknown>>;
  /** Authorizes the requester and describes the action; null when this input needs no four-eyes. */
  describe(kv: Deno.Kv, actor: Actor, input: Record<string, unknown>): Promise<Described | null>;
  run(kv: Deno.Kv, actor: Actor, input: Record<string, unknown>, ctx: ActionContext): Promise<ActionOutcome>;
}

const IdField = z.string().min(1).max(40);

/** Encryption turned off, or any retention count lowered: the policy edits four-eyes gates. */
export function policyEditNeedsFourEyes(
  before: Pick<Policy, "encryption" | "retentionDaily" | "retentionWeekly" | "retentionMonthly">,
  after: Pick<Policy, "encryption" | "retentionDaily" | "retentionWeekly" | "retentionMonthly">,
): string[] {
  const changes: string[] = [];
  if (before.encryption !== "none" && after.encryption === "none") changes.push("turns encryption off");
  for (
    const [field, word] of [["retentionDaily", "daily"], ["retentionWeekly", "weekly"], [
      "retentionMonthly",
      "monthly",
    ]] as const
  ) {
    if (after[field] < before[field]) {
      changes.push(`lowers ${word} retention ${before[field]} → ${after[field]}`);
    }
  }
  return changes;
}

const PolicyEditRequest = z.object({
  policyId: IdField,
  mode: z.enum(["update", "patch"]),
  fields: z.record(z.string(), z.unknown()),
  /** The policy's `updatedAt` when requested: an approval of an edit made on an older policy is refused. */
  policyUpdatedAt: z.string().optional(),
});

/** The policy as `fields` would leave it (validated like the edit itself). */
function editedPolicy(policy: Policy, mode: "update" | "patch", fields: Record<string, unknown>) {
  if (mode === "update") return PolicyUpdateInput.parse(fields);
  const patch = PolicyPatchInput.parse(fields) as Record<string, unknown>;
  const named = Object.fromEntries(Object.entries(patch).filter(([key]) => Object.hasOwn(fields, key)));
  return PolicyUpdateInput.parse({ ...policyAsInput(policy), ...named });
}

/** What `objectAction` needs to declare an action on one stored object named by its id. */
interface ObjectActionSpec<T extends { id: string }> {
  /** The input field holding the object's id. */
  field: string;
  /** Loads the object (NotFoundError when the actor cannot see it). */
  load(kv: Deno.Kv, actor: Actor, id: string): Promise<T>;
  /** The scope the permission is checked on. */
  scope(object: T): { accountId: string; orgId: string | null };
  permission: Permission;
  objectType: string;
  summary(object: T): string;
  /** Refuses (throws) when the action cannot run on this object; checked after the permission. */
  refuse?(object: T): void;
  run(kv: Deno.Kv, actor: Actor, id: string, ctx: ActionContext): Promise<ActionOutcome>;
}

/** An action on one object: load it, authorize the requester on its scope, describe it; run by id. */
function objectAction<T extends { id: string }>(spec: ObjectActionSpec<T>): ActionSpec {
  return {
    input: z.object({ [spec.field]: IdField }),
    async describe(kv, actor, input) {
      const object = await spec.load(kv, actor, String(input[spec.field]));
      const scope = spec.scope(object);
      authorize(actor, spec.permission, scope);
      spec.refuse?.(object);
      return {
        ...scope,
        permission: spec.permission,
        objectType: spec.objectType,
        objectId: object.id,
        summary: spec.summary(object),
      };
    },
    run: (kv, actor, input, ctx) => spec.run(kv, actor, String(input[spec.field]), ctx),
  };
}

/** Deleting an object of a BES (`backup.manage` on its scope). */
function deleteAction<T extends { id: string; accountId: string; orgId: string | null }>(
  spec: Pick<ObjectActionSpec<T>, "field" | "load" | "objectType" | "summary"> & {
    remove(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<unknown>;
    message: string;
  },
): ActionSpec {
  return objectAction({
    ...spec,
    scope: (object) => ({ accountId: object.accountId, orgId: object.orgId }),
    permission: "backup.manage",
    run: async (kv, actor, id, { now }) => {
      await spec.remove(kv, actor, id, now);
      return { message: spec.message };
    },
  });
}

/** An admin action on an organization. */
function orgAction(
  summary: (orgName: string) => string,
  run: ObjectActionSpec<{ id: string }>["run"],
): ActionSpec {
  return objectAction({
    field: "orgId",
    load: requireOrg,
    scope: (org) => ({ accountId: org.accountId, orgId: org.id }),
    permission: "admin",
    objectType: "org",
    summary: (org) => summary(org.name),
    run,
  });
}

/** An admin action on the whole account; `gated` says whether it needs four-eyes now. */
function accountAction(spec: {
  gated(kv: Deno.Kv, accountId: string): Promise<boolean>;
  summary: string;
  run(kv: Deno.Kv, actor: Actor, accountId: string, now: Date): Promise<ActionOutcome>;
}): ActionSpec {
  return {
    input: z.object({ accountId: IdField }),
    async describe(kv, actor, input) {
      const scope = { accountId: String(input.accountId), orgId: null };
      authorize(actor, "admin", scope);
      if (!(await spec.gated(kv, scope.accountId))) return null;
      return {
        ...scope,
        permission: "admin" as const,
        objectType: "account",
        objectId: scope.accountId,
        summary: spec.summary,
      };
    },
    run: (kv, actor, input, { now }) => spec.run(kv, actor, String(input.accountId), now),
  };
}

const ACTIONS: Record<ApprovalKind, ActionSpec> = {
  "engine.delete": deleteAction({
    field: "engineId",
    load: requireEngine,
    objectType: "engine",
    summary: (engine) => `Delete BES ${engine.name} with its storage targets and policies`,
    remove: deleteEngine,
    message: "The BES was deleted (its children are removed in the background if many)",
  }),
  "target.delete": deleteAction({
    field: "targetId",
    load: requireTarget,
    objectType: "storage_target",
    summary: (target) => `Delete storage target ${target.name}`,
    remove: deleteTarget,
    message: "The storage target was deleted",
  }),
  "policy.delete": deleteAction({
    field: "policyId",
    load: requirePolicy,
    objectType: "policy",
    summary: (policy) => `Delete policy ${policy.name}`,
    remove: deletePolicy,
    message: "The policy was deleted",
  }),
  "policy.update": {
    input: PolicyEditRequest as unknown as z.ZodType<Record<string, unknown>>,
    async describe(kv, actor, raw) {
      const input = PolicyEditRequest.parse(raw);
      const policy = await requirePolicy(kv, actor, input.policyId);
      const scope = { accountId: policy.accountId, orgId: policy.orgId };
      authorize(actor, "backup.manage", scope);
      const edited = editedPolicy(policy, input.mode, input.fields);
      const changes = policyEditNeedsFourEyes(policy, edited);
      if (!changes.length) return null;
      raw.policyUpdatedAt = policy.updatedAt;
      // The whole edit runs on approval: the approver must see every other field it changes too.
      const before = PolicyUpdateInput.parse(policyAsInput(policy)) as Record<string, unknown>;
      const after = edited as Record<string, unknown>;
      const gated = new Set(["encryption", "retentionDaily", "retentionWeekly", "retentionMonthly", "besId"]);
      const others = Object.keys(after).filter((key) =>
        !gated.has(key) && JSON.stringify(after[key]) !== JSON.stringify(before[key])
      );
      return {
        ...scope,
        permission: "backup.manage",
        objectType: "policy",
        objectId: policy.id,
        summary: `Edit policy ${policy.name}: ${changes.join(", ")}${
          others.length ? `; also changes ${others.join(", ")}` : ""
        }`,
      };
    },
    async run(kv, actor, raw, { now }) {
      const input = PolicyEditRequest.parse(raw);
      const policy = await requirePolicy(kv, actor, input.policyId);
      if (input.policyUpdatedAt && policy.updatedAt !== input.policyUpdatedAt) {
        throw new ConflictError(
          "The policy was changed after this edit was requested: nothing was applied; request the edit again",
        );
      }
      if (input.mode === "update") {
        await updatePolicy(kv, actor, input.policyId, input.fields as PolicyUpdateInput, now);
      } else await patchPolicy(kv, actor, input.policyId, input.fields, now);
      return { message: "The policy edit was saved" };
    },
  },
  "restore_point.expire": {
    input: z.object({ restorePointId: IdField }),
    async describe(kv, actor, input) {
      const id = String(input.restorePointId);
      await authorizeExpireArchived(kv, actor, id);
      const point = (await kv.get<RestorePoint>(restorePointKey(id))).value!;
      if (!point.archivedAt || point.status !== "complete") {
        throw new ConflictError(
          point.status === "expired"
            ? "This restore point is already expired"
            : "Only an archived restore point is expired by hand; retention manages this one",
        );
      }
      const [live, retired] = await kv.getMany<[Policy, Policy]>([
        policyKey(point.policyId),
        retiredPolicyKey(point.policyId),
      ]);
      const policy = (live.value ?? retired.value)!;
      // A held point is refused now rather than after a second person approved.
      await refuseIfHeld(kv, policy.accountId, point);
      return {
        accountId: policy.accountId,
        orgId: policy.orgId,
        permission: "backup.manage",
        objectType: "restore_point",
        objectId: id,
        summary: `Expire restore point ${id} of ${point.completedAt} (policy ${policy.name}) early`,
      };
    },
    async run(kv, actor, input, { now }) {
      await expireArchivedPoint(
        kv,
        actor,
        String(input.restorePointId),
        ExpireArchivedInput.parse({ confirm: true }),
        now,
      );
      return { message: "The restore point was expired; the BES prunes its data" };
    },
  },
  "org_secret.rotate": orgAction(
    (name) => `Rotate the registration secret of ${name}`,
    async (kv, actor, orgId, { now }) => {
      const { secret } = await rotateOrgSecret(kv, actor, orgId, now);
      return { message: "The registration secret was rotated; the old one stopped working", secret };
    },
  ),
  "account_secret.rotate": accountAction({
    // Issuing the first secret replaces nothing: only a rotation is gated.
    gated: async (kv, accountId) => Boolean((await getAccount(kv, accountId))?.secretHash),
    summary: "Rotate the account registration secret",
    run: async (kv, actor, accountId, now) => {
      const { secret } = await rotateAccountSecret(kv, actor, accountId, now);
      return { message: "The account registration secret was rotated", secret };
    },
  }),
  "pam_vault_key.rotate": orgAction(
    (name) => `Rotate the PAM vault key of ${name}`,
    async (kv, actor, orgId, { now, masterKey }) => {
      const org = await requireOrg(kv, actor, orgId);
      const scope = { source: "pam_vault" as const, accountId: org.accountId, orgId: org.id };
      const { version, rewrapped } = await rotateKek(kv, masterKey, actor, scope, now);
      const keyId = kekReference("pam_vault", org.accountId, org.id).keyId;
      return { message: `Vault key ${keyId} is at version ${version}; ${rewrapped} key sets re-wrapped` };
    },
  ),
  "legal_hold.release": objectAction({
    field: "holdId",
    load: requireHold,
    scope: (hold) => ({ accountId: hold.accountId, orgId: hold.orgId }),
    permission: "backup.hold",
    objectType: "legal_hold",
    summary: (hold) => `Release legal hold ${hold.caseReference} on ${hold.scope} ${hold.subjectLabel}`,
    refuse(hold) {
      if (hold.status !== "active") {
        throw new ConflictError(`Legal hold ${hold.caseReference} is already released`);
      }
    },
    run: async (kv, actor, holdId, { now }) => {
      await releaseHold(kv, actor, holdId, now);
      return { message: "The legal hold was released" };
    },
  }),
  // Otherwise one admin could switch the guard off, act alone, and switch it back on.
  "four_eyes.disable": accountAction({
    gated: async (kv, accountId) => (await getFourEyesSettings(kv, accountId)).enabled,
    summary: "Turn four-eyes approval off",
    run: async (kv, actor, accountId, now) => {
      const current = await getFourEyesSettings(kv, accountId);
      await setFourEyesSettings(kv, actor, { enabled: false, ttlHours: current.ttlHours }, now);
      return { message: "Four-eyes approval is off" };
    },
  }),
};

/** A gated action as a route hands it over. */
export interface GatedAction {
  kind: ApprovalKind;
  input: Record<string, unknown>;
}

/**
 * When four-eyes is on for the actor's account and the action needs it, records an approval request
 * (with its audit entry) and returns it; otherwise returns null and the caller runs the action directly.
 * Authorizes the requester as the action itself would: NotFoundError / ForbiddenError; ZodError for bad
 * input.
 */
export async function requestIfFourEyes(
  kv: Deno.Kv,
  actor: Actor,
  action: GatedAction,
  now: Date,
): Promise<ApprovalRequest | null> {
  if (actor.kind === "system" || !actor.accountId) return null;
  const settings = await getFourEyesSettings(kv, actor.accountId);
  if (!settings.enabled) return null;
  const spec = ACTIONS[action.kind];
  const input = { ...spec.input.parse(action.input) };
  const described = await spec.describe(kv, actor, input);
  if (!described) return null;
  const request: ApprovalRequest = {
    id: newId(now),
    accountId: described.accountId,
    orgId: described.orgId,
    kind: action.kind,
    input,
    permission: described.permission,
    objectType: described.objectType,
    objectId: described.objectId,
    summary: described.summary,
    status: "pending",
    requestedById: actor.id,
    requestedByLabel: actor.label,
    requestedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + settings.ttlHours * 3_600_000).toISOString(),
    decidedById: null,
    decidedByLabel: null,
    decidedAt: null,
    outcome: null,
  };
  const op = kv.atomic()
    .check({ key: approvalKey(request.id), versionstamp: null })
    .set(approvalKey(request.id), request)
    .set(approvalsByAccountKey(request.accountId, request.id), request.id)
    .set(openApprovalKey(request.id), request.id);
  await commitAudited(
    op,
    actor,
    {
      accountId: request.accountId,
      orgId: request.orgId,
      action: "approval.request",
      objectType: request.objectType,
      objectId: request.objectId,
      summary: `Requested four-eyes approval (${request.id}): ${request.summary}`,
    },
    now,
    "The request could not be written; try again",
  );
  return request;
}

/** The request if the actor may see it (same account, the object's org in scope). Throws NotFoundError otherwise. */
export async function requireApproval(kv: Deno.Kv, actor: Actor, id: string): Promise<ApprovalRequest> {
  const request = /^[0-9A-Z]{26}$/.test(id) ? (await kv.get<ApprovalRequest>(approvalKey(id))).value : null;
  if (!request || !inScope(actor, request)) {
    throw new NotFoundError(`Approval request ${id.slice(0, 40)} not found`);
  }
  return request;
}

/** The account's requests in the actor's scope, newest first: pending ones, or the last 200 decided ones. */
export async function listApprovals(
  kv: Deno.Kv,
  actor: Actor,
  filter: ApprovalFilter = {},
): Promise<ApprovalRequest[]> {
  if (!actor.accountId) return [];
  const { status } = ApprovalFilter.parse(filter);
  const out: ApprovalRequest[] = [];
  let keys: Deno.KvKey[] = [];
  const flush = async () => {
    for (const r of await getManyValues<ApprovalRequest>(kv, keys)) {
      const open = r.status === "pending";
      if (inScope(actor, r) && (status === "pending") === open) out.push(r);
    }
    keys = [];
  };
  for await (
    const e of kv.list<string>({ prefix: approvalsByAccountPrefix(actor.accountId) }, {
      reverse: true,
      limit: 2000,
    })
  ) {
    keys.push(approvalKey(e.value));
    if (keys.length === 100) await flush();
    if (out.length >= 200) break;
  }
  await flush();
  return out.slice(0, 200);
}

/** True when the actor may approve or refuse this request (not its requester, holds its permission). */
export function canDecide(actor: Actor, request: ApprovalRequest): boolean {
  return actor.kind !== "system" && actor.id !== request.requestedById &&
    can(actor, request.permission, request);
}

/**
 * Approves a pending request and runs its action once, as the approver. Throws NotFoundError out of
 * scope; ForbiddenError for the requester (someone else must approve), a system actor, or an approver
 * without the action's permission; ConflictError when the request is not pending any more, has expired,
 * or another decision won the race. The action's own failure does not throw: the request ends `failed`
 * with the message (nothing is retried). Returns the settled request and the action's outcome.
 */
export async function approveRequest(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  ctx: ActionContext,
): Promise<{ request: ApprovalRequest; outcome: ActionOutcome | null }> {
  const { now } = ctx;
  const entry = await kv.get<ApprovalRequest>(approvalKey(id));
  const request = entry.value;
  if (!request || !inScope(actor, request)) {
    throw new NotFoundError(`Approval request ${id.slice(0, 40)} not found`);
  }
  if (actor.kind === "system") {
    throw new ForbiddenError("Only a person (or their API token) approves a request");
  }
  if (actor.id === request.requestedById) {
    throw new ForbiddenError("You requested this action: a second, different user must approve it");
  }
  authorize(actor, request.permission, request);
  settledGuard(request, now);
  const claimed: ApprovalRequest = {
    ...request,
    status: "executing",
    decidedById: actor.id,
    decidedByLabel: actor.label,
    decidedAt: now.toISOString(),
  };
  const op = kv.atomic().check(entry).set(approvalKey(id), claimed);
  await commitAudited(
    op,
    actor,
    {
      accountId: request.accountId,
      orgId: request.orgId,
      action: "approval.approve",
      objectType: request.objectType,
      objectId: request.objectId,
      summary: `Approved ${request.requestedByLabel}'s request ${request.id}: ${request.summary}`,
    },
    now,
    "Someone else decided this request at the same time: it was not approved twice",
  );
  let outcome: ActionOutcome | null = null;
  let failure: string | null = null;
  try {
    outcome = await ACTIONS[request.kind].run(kv, actor, request.input, ctx);
  } catch (e) {
    if (!(e instanceof Error) || e.name === "TypeError" || e.name === "ReferenceError") throw e;
    failure = e.message;
  }
  const settled: ApprovalRequest = {
    ...claimed,
    status: failure === null ? "executed" : "failed",
    outcome: failure === null ? outcome!.message : `Failed: ${failure}`,
  };
  const done = kv.atomic().set(approvalKey(id), settled).delete(openApprovalKey(id));
  appendAudit(done, actor, {
    accountId: request.accountId,
    orgId: request.orgId,
    action: failure === null ? "approval.executed" : "approval.failed",
    objectType: request.objectType,
    objectId: request.objectId,
    summary:
      `Request ${request.id} (${request.summary}), requested by ${request.requestedByLabel} and approved by ${actor.label}: ${settled.outcome}`,
  }, now);
  await done.commit();
  return { request: settled, outcome };
}

/** Throws a ConflictError unless the request still waits for a decision at `now`. */
function settledGuard(request: ApprovalRequest, now: Date): void {
  if (request.status !== "pending") {
    throw new ConflictError(`This request is already ${request.status}: nothing changed`);
  }
  if (now.getTime() >= Date.parse(request.expiresAt)) {
    throw new ConflictError("This request has expired: nothing changed; request the action again");
  }
}

/**
 * Refuses a pending request (its requester may withdraw it; anyone else needs the action's
 * permission): nothing of the action runs. Audited. Throws NotFoundError, ForbiddenError, ZodError,
 * ConflictError when it is no longer pending or lost a race.
 */
export async function refuseRequest(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: RefuseInput,
  now: Date,
): Promise<ApprovalRequest> {
  const { note } = RefuseInput.parse(input);
  const entry = await kv.get<ApprovalRequest>(approvalKey(id));
  const request = entry.value;
  if (!request || !inScope(actor, request)) {
    throw new NotFoundError(`Approval request ${id.slice(0, 40)} not found`);
  }
  const withdrawing = actor.id === request.requestedById;
  if (!withdrawing) authorize(actor, request.permission, request);
  settledGuard(request, now);
  const refused: ApprovalRequest = {
    ...request,
    status: "refused",
    decidedById: actor.id,
    decidedByLabel: actor.label,
    decidedAt: now.toISOString(),
    outcome: withdrawing ? `Withdrawn by the requester${note ? `: ${note}` : ""}` : note || null,
  };
  const op = kv.atomic().check(entry).set(approvalKey(id), refused).delete(openApprovalKey(id));
  await commitAudited(
    op,
    actor,
    {
      accountId: request.accountId,
      orgId: request.orgId,
      action: withdrawing ? "approval.withdraw" : "approval.refuse",
      objectType: request.objectType,
      objectId: request.objectId,
      summary: `${
        withdrawing ? "Withdrew" : "Refused"
      } ${request.requestedByLabel}'s request ${request.id}: ${request.summary}${note ? ` (${note})` : ""}`,
    },
    now,
    "Someone else decided this request at the same time: nothing changed",
  );
  return refused;
}

/**
 * The expiry job: every pending request past its time limit becomes `expired` (nothing runs), and a
 * request stuck `executing` for `INTERRUPTED_AFTER_MS` becomes `interrupted`; each with its audit entry,
 * checked against the request so an approval racing it wins or loses as a whole. Idempotent.
 */
export async function expireApprovalRequests(
  kv: Deno.Kv,
  now: Date,
): Promise<{ expired: number; interrupted: number }> {
  let expired = 0;
  let interrupted = 0;
  const actor = systemActor("four-eyes");
  for await (const e of kv.list<string>({ prefix: openApprovalsPrefix() })) {
    await withRetry(async () => {
      const entry = await kv.get<ApprovalRequest>(approvalKey(e.value));
      const request = entry.value;
      if (!request) {
        await kv.delete(e.key);
        return { value: undefined };
      }
      const late = request.status === "pending" && now.getTime() >= Date.parse(request.expiresAt);
      const stuck = request.status === "executing" && request.decidedAt !== null &&
        now.getTime() - Date.parse(request.decidedAt) >= INTERRUPTED_AFTER_MS;
      if (!late && !stuck) {
        if (request.status !== "pending" && request.status !== "executing") await kv.delete(e.key);
        return { value: undefined };
      }
      const next: ApprovalRequest = late
        ? {
          ...request,
          status: "expired",
          decidedAt: now.toISOString(),
          outcome: "Expired without a decision",
        }
        : {
          ...request,
          status: "interrupted",
          outcome:
            "Interrupted: the approver's process stopped while the action ran; check the object, and request again if needed",
        };
      const op = kv.atomic().check(entry).set(approvalKey(request.id), next).delete(e.key);
      appendAudit(op, actor, {
        accountId: request.accountId,
        orgId: request.orgId,
        action: late ? "approval.expire" : "approval.interrupted",
        objectType: request.objectType,
        objectId: request.objectId,
        summary: `${
          late ? "Expired" : "Interrupted"
        } request ${request.id} of ${request.requestedByLabel}: ${request.summary}`,
      }, now);
      if (!(await op.commit()).ok) return null;
      if (late) expired++;
      else interrupted++;
      return { value: undefined };
    });
  }
  return { expired, interrupted };
}
