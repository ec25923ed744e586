/**
 * Application-consistent hooks of a backup policy: commands an agent runs around a backup so that a
 * database on the host is captured in a consistent state. A hook runs a pre-built template (MySQL /
 * MariaDB, PostgreSQL, MongoDB, Elasticsearch) or a custom script from the library (scripts.ts) of the
 * policy's own account and organization.
 *
 * Hook types, in the order they fire during one backup:
 * 1. `pre_backup` — before the job starts reading (e.g. dump a database to a staging folder);
 * 2. `pre_snapshot` — right before the VSS / LVM snapshot is taken (quiesce, flush);
 * 3. `post_snapshot` — right after the snapshot exists (resume writes; keep this short);
 * 4. `post_backup` — after the job has finished (remove the dump, notify).
 * Hooks of one type run by `sequence` ascending, then by id for ties (see `orderHooks`).
 *
 * Keys: `["hooks", id]` (the hook), `["hooks_by_policy", policyId, id]` and `["hooks_by_script",
 * scriptId, id]` for custom hooks. The policy cascade (policy_cascade.ts) calls `deleteHooksOfPolicy`;
 * hooks left behind by a cascade that crashed or by a policy deleted before it knew hooks count as
 * deleted for every reader here, `deleteScript` ignores (and removes) them, and `sweepOrphanHooks`
 * removes the rest.
 */
import {
  hookKey,
  hooksByPolicyKey,
  hooksByPolicyPrefix,
  hooksByScriptKey,
  hooksByScriptPrefix,
  hooksPrefix,
  scriptKey,
} from "./keys/policies.ts";
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { NotFoundError, ValidationError } from "./errors.ts";
import { newId } from "./ids.ts";
import { getManyValues, kvValueBytes, withRetry } from "./kv.ts";
import { deleteByPointerIndex } from "./pointer_index.ts";
import type { Policy, PolicyCore } from "./policies.ts";
import { policyKey } from "./policy_keys.ts";
import { checkEngineNotDeleting, policyForNewChild, requirePolicy } from "./policy_reads.ts";
import { type Actor, authorize, inScope, systemActor } from "./rbac.ts";
// Types only: scripts.ts imports this module (a script's new body is checked against its hooks).
import type { Interpreter, Script } from "./scripts.ts";
export { hookKey, hooksByPolicyKey };

/** Hook types in execution order (see the module comment). */
export const HOOK_TYPES = ["pre_backup", "pre_snapshot", "post_snapshot", "post_backup"] as const;
export type HookType = (typeof HOOK_TYPES)[number];
export const HOOK_TYPE_LABELS: Record<HookType, string> = {
  pre_backup: "Pre-backup",
  pre_snapshot: "Pre-snapshot",
  post_snapshot: "Post-snapshot",
  post_backup: "Post-backup",
};

export const TEMPLATE_NAMES = ["mysql", "postgresql", "mongodb", "elasticsearch"] as const;
export type TemplateName = (typeof TEMPLATE_NAMES)[number];

/** A pre-built hook: `pre` runs for pre_* hooks, `post` for post_* hooks. */
export interface HookTemplate {
  label: string;
  /** One line for the template picker (the guide's "Script Snippet" column). */
  description: string;
  interpreter: Interpreter;
  pre: string;
  post: string;
}

const DUMP_DIR = 'DUMP_DIR="${CADRES_DUMP_DIR:-/var/backups/cadres';

/**
 * The templates of the guide. Connection details come from the host's environment and the tools'
 * own credential files (~/.my.cnf, ~/.pgpass, a MongoDB URI), never from the control plane.
 */
export const HOOK_TEMPLATES: Record<TemplateName, HookTemplate> = {
  mysql: {
    label: "MySQL / MariaDB",
    description: "mysqldump --single-transaction",
    interpreter: "bash",
    pre: [
      "set -euo pipefail",
      `${DUMP_DIR}/mysql}"`,
      'mkdir -p "$DUMP_DIR"',
      "# A consistent InnoDB snapshot without locking tables; credentials from ~/.my.cnf.",
      "mysqldump --single-transaction --quick --routines --triggers --events --all-databases \\",
      '  > "$DUMP_DIR/all-databases.sql.tmp"',
      'mv "$DUMP_DIR/all-databases.sql.tmp" "$DUMP_DIR/all-databases.sql"',
    ].join("\n"),
    post: [
      "set -euo pipefail",
      `${DUMP_DIR}/mysql}"`,
      'rm -f "$DUMP_DIR/all-databases.sql"',
    ].join("\n"),
  },
  postgresql: {
    label: "PostgreSQL",
    description: "pg_dump",
    interpreter: "bash",
    pre: [
      "set -euo pipefail",
      `${DUMP_DIR}/postgresql}"`,
      'mkdir -p "$DUMP_DIR"',
      "# Roles and tablespaces, then each database in pg_dump's custom format; credentials from ~/.pgpass.",
      'pg_dumpall --globals-only > "$DUMP_DIR/globals.sql"',
      'for db in $(psql -At -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"); do',
      '  pg_dump --format=custom --file="$DUMP_DIR/$db.dump" "$db"',
      "done",
    ].join("\n"),
    post: [
      "set -euo pipefail",
      `${DUMP_DIR}/postgresql}"`,
      'rm -f "$DUMP_DIR"/*.dump "$DUMP_DIR/globals.sql"',
    ].join("\n"),
  },
  mongodb: {
    label: "MongoDB",
    description: "mongodump with replica set support",
    interpreter: "bash",
    pre: [
      "set -euo pipefail",
      `${DUMP_DIR}/mongodb}"`,
      'rm -rf "$DUMP_DIR" && mkdir -p "$DUMP_DIR"',
      "# On a replica set, --oplog captures writes made during the dump (restore with --oplogReplay);",
      "# set MONGODB_STANDALONE=1 for a standalone server, which has no oplog.",
      'OPLOG="--oplog"',
      'if [ "${MONGODB_STANDALONE:-0}" = "1" ]; then OPLOG=""; fi',
      'mongodump --uri="${MONGODB_URI:-mongodb://localhost:27017/?replicaSet=rs0}" $OPLOG --gzip --out="$DUMP_DIR"',
    ].join("\n"),
    post: [
      "set -euo pipefail",
      `${DUMP_DIR}/mongodb}"`,
      'rm -rf "$DUMP_DIR"',
    ].join("\n"),
  },
  elasticsearch: {
    label: "Elasticsearch",
    description: "Snapshot to registered repository",
    interpreter: "bash",
    pre: [
      "set -euo pipefail",
      'ES_URL="${ES_URL:-http://localhost:9200}"',
      "# The repository must already be registered (PUT _snapshot/<name>); its files are what gets backed up.",
      'REPOSITORY="${ES_SNAPSHOT_REPOSITORY:-cadres}"',
      'SNAPSHOT="cadres-$(date -u +%Y%m%d-%H%M%S)"',
      'curl -fsS -X PUT "$ES_URL/_snapshot/$REPOSITORY/$SNAPSHOT?wait_for_completion=true" \\',
      "  -H 'Content-Type: application/json' \\",
      `  -d '{"indices": "*", "include_global_state": true}'`,
    ].join("\n"),
    post: [
      "set -euo pipefail",
      'ES_URL="${ES_URL:-http://localhost:9200}"',
      'REPOSITORY="${ES_SNAPSHOT_REPOSITORY:-cadres}"',
      "# Confirm every node can still reach the repository; snapshot retention is left to SLM.",
      'curl -fsS -X POST "$ES_URL/_snapshot/$REPOSITORY/_verify" > /dev/null',
    ].join("\n"),
  },
};

export interface Hook {
  id: string;
  /** Copied from the policy: the hook's tenancy. */
  accountId: string;
  orgId: string | null;
  policyId: string;
  type: HookType;
  /** null: a custom hook running `scriptId`. */
  template: TemplateName | null;
  scriptId: string | null;
  timeoutSeconds: number;
  sequence: number;
  failOnError: boolean;
  createdAt: string;
  updatedAt: string;
}

/** A hook as listed on the policy form: with its script's name and its template's label. */
export interface HookView extends Hook {
  scriptName: string | null;
  templateLabel: string | null;
}

/** Every key of a hook, so create, update and delete touch the same set. */
function hookKeys(h: Pick<Hook, "id" | "policyId" | "scriptId">): Deno.KvKey[] {
  return [
    hookKey(h.id),
    hooksByPolicyKey(h.policyId, h.id),
    ...(h.scriptId ? [hooksByScriptKey(h.scriptId, h.id)] : []),
  ];
}

function hookScope(h: Pick<Hook, "accountId" | "orgId">) {
  return { accountId: h.accountId, orgId: h.orgId };
}

const BlankToNull = z.literal("").transform(() => null);

/** The fields of a hook, without their cross-field rule (`hookRule`). */
const HookShape = z.object({
  type: z.enum(HOOK_TYPES, { error: `must be one of ${HOOK_TYPES.join(", ")}` }),
  template: z.union([BlankToNull, z.enum(TEMPLATE_NAMES)], {
    error: `must be one of ${TEMPLATE_NAMES.join(", ")} (or empty for a custom script)`,
  }).nullable().default(null),
  scriptId: z.union([BlankToNull, z.string().max(40)]).nullable().default(null),
  timeoutSeconds: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
    .min(1, "must be 1–3600").max(3600, "must be 1–3600").default(300),
  sequence: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
    .min(0, "must be 0–1000").max(1000, "must be 0–1000").default(100),
  failOnError: z.boolean().default(true),
}).strict();

/** A hook runs a template or a custom script: exactly one of them. */
function hookRule(h: { template: TemplateName | null; scriptId: string | null }, ctx: z.RefinementCtx): void {
  if (h.template && h.scriptId) {
    ctx.addIssue({ code: "custom", path: ["scriptId"], message: "must be empty when a template is chosen" });
  }
  if (!h.template && !h.scriptId) {
    ctx.addIssue({ code: "custom", path: ["scriptId"], message: "is required for a custom script hook" });
  }
}

/**
 * The editable fields of a hook: a template, or a custom script (exactly one of them). Strict: an
 * unknown field is refused (the policy page's form, `POST /api/v1/policies/{id}/hooks`, `PUT
 * /api/v1/hooks/{id}`).
 */
export const HookFields = HookShape.superRefine(hookRule);
export type HookUpdateInput = z.input<typeof HookFields>;

/** A new hook: its policy and its fields. */
export const HookCreateInput = HookShape.extend({ policyId: z.string().min(1, "is required").max(40) })
  .superRefine(hookRule);
export type HookCreateInput = z.input<typeof HookCreateInput>;

/** Hooks in execution order: by type (HOOK_TYPES order), then `sequence` ascending, then id. */
export function orderHooks<T extends Pick<Hook, "id" | "type" | "sequence">>(hooks: readonly T[]): T[] {
  return [...hooks].sort((a, b) =>
    HOOK_TYPES.indexOf(a.type) - HOOK_TYPES.indexOf(b.type) || a.sequence - b.sequence ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

/**
 * What an agent runs for a hook: the template's pre or post snippet, or the library script's body.
 * Throws if a custom hook is given no script or a different one.
 */
export function hookScript(
  hook: Pick<Hook, "type" | "template" | "scriptId">,
  script?: Pick<Script, "id" | "interpreter" | "body"> | null,
): { interpreter: Interpreter; body: string } {
  if (hook.template) {
    const t = HOOK_TEMPLATES[hook.template];
    return { interpreter: t.interpreter, body: hook.type.startsWith("pre_") ? t.pre : t.post };
  }
  if (!script || script.id !== hook.scriptId) {
    throw new Error(`Cannot build hook command: script ${hook.scriptId} is missing`);
  }
  return { interpreter: script.interpreter, body: script.body };
}

/** Loads a hook if its policy still exists (a hook of a deleted policy counts as deleted). */
async function readLiveHook(
  kv: Deno.Kv,
  id: string,
): Promise<{ entry: Deno.KvEntryMaybe<Hook>; policyEntry: Deno.KvEntryMaybe<Policy> } | null> {
  const entry = await kv.get<Hook>(hookKey(id));
  if (!entry.value) return null;
  const policyEntry = await kv.get<Policy>(policyKey(entry.value.policyId));
  return policyEntry.value ? { entry, policyEntry } : null;
}

/** Returns the hook if it exists, its policy too, and the actor may see it; throws NotFoundError otherwise. */
export async function requireHook(kv: Deno.Kv, actor: Actor, id: string): Promise<Hook> {
  const live = await readLiveHook(kv, id);
  const hook = live?.entry.value;
  if (!hook || !inScope(actor, hookScope(hook))) throw new NotFoundError(`Hook ${id} not found`);
  return hook;
}

/** A policy's hooks in execution order, with script names and template labels. Needs backup.view. */
export async function listHooksByPolicy(kv: Deno.Kv, actor: Actor, policyId: string): Promise<HookView[]> {
  const policy = await requirePolicy(kv, actor, policyId);
  authorize(actor, "backup.view", { accountId: policy.accountId, orgId: policy.orgId });
  return await toViews(kv, await readPolicyHooks(kv, policyId));
}

/** Hooks with their scripts' names and their templates' labels. */
async function toViews(kv: Deno.Kv, hooks: Hook[]): Promise<HookView[]> {
  const scripts = await getManyValues<Script>(
    kv,
    [...new Set(hooks.flatMap((h) => h.scriptId ? [h.scriptId] : []))].map(scriptKey),
  );
  const names = new Map(scripts.map((s) => [s.id, s.name]));
  return hooks.map((h) => ({
    ...h,
    scriptName: h.scriptId ? names.get(h.scriptId) ?? null : null,
    templateLabel: h.template ? HOOK_TEMPLATES[h.template].label : null,
  }));
}

/** One hook as listed (script name, template label). Throws NotFoundError like `requireHook`. */
export async function requireHookView(kv: Deno.Kv, actor: Actor, id: string): Promise<HookView> {
  const [view] = await toViews(kv, [await requireHook(kv, actor, id)]);
  return view;
}

/** A template of the catalogue with its name and both snippets (what the agent runs, shown as is). */
export interface HookTemplateEntry extends HookTemplate {
  name: TemplateName;
}

/** The hook template catalogue, in the policy form's order. */
export function hookTemplateCatalogue(): HookTemplateEntry[] {
  return TEMPLATE_NAMES.map((name) => ({ name, ...HOOK_TEMPLATES[name] }));
}

async function readPolicyHooks(kv: Deno.Kv, policyId: string): Promise<Hook[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: hooksByPolicyPrefix(policyId) })) {
    keys.push(hookKey(e.value));
  }
  return orderHooks(await getManyValues<Hook>(kv, keys));
}

/**
 * The commands an agent runs for a policy's backup, in execution order (for job payloads). Custom
 * hooks whose script is missing are left out. No actor: the caller already holds the policy.
 */
export async function hookPlan(kv: Deno.Kv, policyId: string): Promise<HookPlan> {
  return await planOf(kv, await readPolicyHooks(kv, policyId));
}

/** What a job carries of a policy's hooks: each one's command, in execution order. */
export type HookPlan = Array<
  Pick<Hook, "id" | "type" | "timeoutSeconds" | "failOnError"> & { interpreter: Interpreter; body: string }
>;

/** The plan of `hooks`, their scripts read from KV unless `script` stands in for the one of its id. */
async function planOf(
  kv: Deno.Kv,
  hooks: Hook[],
  script?: Pick<Script, "id" | "interpreter" | "body">,
): Promise<HookPlan> {
  const ordered = orderHooks(hooks);
  const scripts = new Map<string, Pick<Script, "id" | "interpreter" | "body">>(
    (await getManyValues<Script>(kv, ordered.flatMap((h) => h.scriptId ? [scriptKey(h.scriptId)] : [])))
      .map((s) => [s.id, s]),
  );
  if (script) scripts.set(script.id, script);
  return ordered.flatMap((h) => {
    const own = h.scriptId ? scripts.get(h.scriptId) : null;
    if (h.scriptId && !own) return [];
    return [{
      id: h.id,
      type: h.type,
      timeoutSeconds: h.timeoutSeconds,
      failOnError: h.failOnError,
      ...hookScript(h, own),
    }];
  });
}

/**
 * Most a policy's hooks may take in a backup job (`kvValueBytes` of their part of the payload), so the
 * policy's excludes and the rest fit beside them (runs.ts MAX_PAYLOAD_BYTES is the hard limit).
 */
export const MAX_HOOK_PLAN_BYTES = 40_000;

/**
 * Throws ValidationError (on `field`) when the hooks of `policyId` — with `hook` added or replaced, or
 * `script` standing in for the stored script of that id — would take more than MAX_HOOK_PLAN_BYTES in a
 * job. Checked when hooks and scripts change, so the operator learns it then; a race between two such
 * changes is still caught by the scheduler, which fails that policy's runs with PAYLOAD_TOO_LARGE.
 */
export async function checkHookPlanSize(
  kv: Deno.Kv,
  policy: Pick<Policy, "id" | "name">,
  change: { hook?: Hook; script?: Pick<Script, "id" | "interpreter" | "body"> },
  field: string,
): Promise<void> {
  const hooks = (await readPolicyHooks(kv, policy.id)).filter((h) => h.id !== change.hook?.id);
  if (change.hook) hooks.push(change.hook);
  const plan = await planOf(kv, hooks, change.script);
  const bytes = kvValueBytes(plan);
  if (bytes > MAX_HOOK_PLAN_BYTES) {
    const kb = (n: number) => `${Math.ceil(n / 1000)} KB`;
    throw new ValidationError(
      `The hooks of policy ${policy.name} would come to ${kb(bytes)}, more than the ${
        kb(MAX_HOOK_PLAN_BYTES)
      } a backup job can carry: use shorter scripts or fewer hooks`,
      { [field]: `The policy's hooks would come to ${kb(bytes)}; at most ${kb(MAX_HOOK_PLAN_BYTES)}` },
    );
  }
}

function describe(h: Pick<Hook, "type" | "template">, script: Script | null): string {
  return `${HOOK_TYPE_LABELS[h.type]} hook ` +
    (h.template
      ? `(${HOOK_TEMPLATES[h.template].label} template)`
      : script
      ? `running script ${script.name}`
      : "running a custom script");
}

/**
 * Adds to `op` what a custom hook needs of its script: the script must be visible to the actor and
 * belong to the policy's account and organization. Its entry is checked and rewritten unchanged so
 * that a concurrent `deleteScript` fails its check and sees the new hook.
 */
async function useScript(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  actor: Actor,
  scriptId: string,
  policy: Pick<PolicyCore, "accountId" | "orgId">,
): Promise<Script> {
  const entry = await kv.get<Script>(scriptKey(scriptId));
  const script = entry.value;
  if (!script || !inScope(actor, { accountId: script.accountId, orgId: script.orgId })) {
    throw new ValidationError("Unknown script", { scriptId: "Choose a script from the library" });
  }
  if (script.accountId !== policy.accountId || script.orgId !== policy.orgId) {
    throw new ValidationError("The script must belong to the policy's organization", {
      scriptId: "Choose a script of this policy's organization",
    });
  }
  op.check(entry).set(scriptKey(script.id), script);
  return script;
}

/**
 * Adds a hook to a policy. Needs backup.manage on the policy. Throws ValidationError for a script of
 * another organization (or one the actor cannot see), NotFoundError for an unknown policy.
 */
export async function createHook(
  kv: Deno.Kv,
  actor: Actor,
  input: HookCreateInput,
  now: Date,
): Promise<Hook> {
  const data = HookCreateInput.parse(input);
  return await withRetry(async () => {
    const { policyEntry, policy, scope } = await policyForNewChild(kv, actor, data.policyId);
    const op = kv.atomic().check(policyEntry);
    await checkEngineNotDeleting(kv, op, policy.besId);
    const script = data.scriptId ? await useScript(kv, op, actor, data.scriptId, policy) : null;
    const at = now.toISOString();
    const hook: Hook = {
      id: newId(now),
      ...scope,
      policyId: policy.id,
      type: data.type,
      template: data.template,
      scriptId: data.template ? null : data.scriptId,
      timeoutSeconds: data.timeoutSeconds,
      sequence: data.sequence,
      failOnError: data.failOnError,
      createdAt: at,
      updatedAt: at,
    };
    if (script) await checkHookPlanSize(kv, policy, { hook, script }, "scriptId");
    const [primary, ...pointers] = hookKeys(hook);
    op.check({ key: primary, versionstamp: null }).set(primary, hook);
    for (const key of pointers) op.set(key, hook.id);
    appendAudit(op, actor, {
      ...scope,
      action: "hook.create",
      objectType: "hook",
      objectId: hook.id,
      summary: `Added ${describe(hook, script)} to policy ${policy.name}`,
    }, now);
    return (await op.commit()).ok ? { value: hook } : null;
  });
}

/** Updates a hook (its policy never changes). Needs backup.manage; the same script rules as create. */
export async function updateHook(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: HookUpdateInput,
  now: Date,
): Promise<Hook> {
  const data = HookFields.parse(input);
  return await withRetry(async () => {
    const live = await readLiveHook(kv, id);
    const hook = live?.entry.value;
    const policy = live?.policyEntry.value;
    if (!live || !hook || !policy || !inScope(actor, hookScope(hook))) {
      throw new NotFoundError(`Hook ${id} not found`);
    }
    authorize(actor, "backup.manage", hookScope(hook));
    const next: Hook = {
      ...hook,
      ...data,
      scriptId: data.template ? null : data.scriptId,
      updatedAt: now.toISOString(),
    };
    const op = kv.atomic().check(live.entry, live.policyEntry);
    const script = next.scriptId ? await useScript(kv, op, actor, next.scriptId, policy) : null;
    if (script) await checkHookPlanSize(kv, policy, { hook: next, script }, "scriptId");
    if (hook.scriptId !== next.scriptId) {
      if (hook.scriptId) op.delete(hooksByScriptKey(hook.scriptId, id));
      if (next.scriptId) op.set(hooksByScriptKey(next.scriptId, id), id);
    }
    op.set(hookKey(id), next);
    appendAudit(op, actor, {
      ...hookScope(hook),
      action: "hook.update",
      objectType: "hook",
      objectId: id,
      summary: `Updated ${describe(next, script)} of policy ${policy.name}`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}

/** Deletes a hook. Needs backup.manage on its policy. */
export async function deleteHook(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  await withRetry(async () => {
    const live = await readLiveHook(kv, id);
    const hook = live?.entry.value;
    if (!live || !hook || !inScope(actor, hookScope(hook))) throw new NotFoundError(`Hook ${id} not found`);
    authorize(actor, "backup.manage", hookScope(hook));
    const op = kv.atomic().check(live.entry);
    for (const key of hookKeys(hook)) op.delete(key);
    appendAudit(op, actor, {
      ...hookScope(hook),
      action: "hook.delete",
      objectType: "hook",
      objectId: id,
      summary: `Removed ${describe(hook, null)} from policy ${live.policyEntry.value?.name}`,
    }, now);
    return (await op.commit()).ok ? { value: undefined } : null;
  });
}

/**
 * Removes one hook with all its keys, checked against its entry (a concurrent edit may have moved its
 * script pointer) and retried. Optionally audited. Returns false if it was already gone.
 */
async function removeHook(
  kv: Deno.Kv,
  id: string,
  audit: { actor: Actor; now: Date } | null,
): Promise<boolean> {
  const attempt = async (): Promise<{ value: boolean } | null> => {
    const entry = await kv.get<Hook>(hookKey(id));
    const hook = entry.value;
    if (!hook) return { value: false };
    const op = kv.atomic().check(entry);
    for (const key of hookKeys(hook)) op.delete(key);
    if (audit) {
      appendAudit(op, audit.actor, {
        ...hookScope(hook),
        action: "hook.delete",
        objectType: "hook",
        objectId: hook.id,
        summary: `Removed a ${
          HOOK_TYPE_LABELS[hook.type]
        } hook left behind by deleted policy ${hook.policyId}`,
      }, audit.now);
    }
    return (await op.commit()).ok ? { value: true } : null;
  };
  return await withRetry(attempt, 10, `Hook ${id} kept changing while it was being removed; try again`);
}

/**
 * Deletes every hook of a policy with all their keys (for the policy's cascade; idempotent). Call it
 * before the cascade clears `["hooks_by_policy", policyId]`, which is how it finds them.
 */
export async function deleteHooksOfPolicy(kv: Deno.Kv, policyId: string): Promise<number> {
  return await deleteByPointerIndex(kv, hooksByPolicyPrefix(policyId), (id) => removeHook(kv, id, null));
}

/**
 * Removes hooks whose policy no longer exists (left behind by a policy delete whose cascade knew only
 * `["hooks_by_policy", …]`), audited as the system. Idempotent; returns how many it removed.
 */
export async function sweepOrphanHooks(
  kv: Deno.Kv,
  now: Date,
  isDoomed: (policyId: string, policy: PolicyCore | null) => boolean = (_, p) => p === null,
  audit = true,
): Promise<number> {
  const hooks: Hook[] = [];
  for await (const e of kv.list<Hook>({ prefix: hooksPrefix() })) {
    if (typeof e.value?.policyId === "string") hooks.push(e.value);
  }
  const policyIds = [...new Set(hooks.map((h) => h.policyId))];
  const policies = new Map(
    (await getManyValues<PolicyCore>(kv, policyIds.map(policyKey))).map((p) => [p.id, p]),
  );
  let n = 0;
  for (const hook of hooks.filter((h) => isDoomed(h.policyId, policies.get(h.policyId) ?? null))) {
    if (await removeHook(kv, hook.id, audit ? { actor: systemActor("hook-sweep"), now } : null)) n++;
  }
  return n;
}

/**
 * Throws ValidationError (field `body`) when a script's new body no longer fits in the jobs of a policy whose
 * hooks run it. `updateScript` (scripts.ts) calls it before saving a changed body.
 */
export async function checkScriptBodyFitsHooks(
  kv: Deno.Kv,
  script: Pick<Script, "id" | "interpreter" | "body">,
): Promise<void> {
  const policyIds = new Set<string>();
  for await (const e of kv.list<string>({ prefix: hooksByScriptPrefix(script.id) })) {
    const hook = (await kv.get<Hook>(hookKey(e.value))).value;
    if (hook) policyIds.add(hook.policyId);
  }
  for (const policy of await getManyValues<Policy>(kv, [...policyIds].map((id) => policyKey(id)))) {
    await checkHookPlanSize(kv, policy, { script }, "body");
  }
}
