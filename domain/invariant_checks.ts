/**
 * The consistency check of the stored data: a bounded run of the invariant checks (invariants.ts) after a
 * resumed engine-deletion cascade and once on start. Its last result is kept for Health > Database. Each
 * account whose data breaks an invariant gets one critical alert (reason `invariant_violation`); what no
 * account can be told for (a dangling index, a record of a missing account) goes to the operator account,
 * whose administrators run the platform. A later complete run without violations resolves the alert; a
 * partial run only raises (it did not look everywhere).
 */
import { type Alert, raiseAlert, readOpenAlert, resolveAlert } from "./alerts.ts";
import { checkInvariantsBounded, type SectionOutcome, type Violation } from "./invariants.ts";
import type { Actor } from "./rbac.ts";
import { CommitConflictError, withRetry } from "./retry.ts";
import { authorizePlatformAdmin } from "./self_backup_runs.ts";
import { listAccounts } from "./tenancy.ts";
import { openAlertsOfTypePrefix } from "./keys/alerts.ts";
import { lastInvariantCheckKey } from "./keys/invariants.ts";
export { lastInvariantCheckKey };

/** Why a check ran. */
export type InvariantTrigger = "startup" | "resumed_deletion";

/** At most this many violations are kept with the last result (the count says how many there were). */
export const INVARIANT_VIOLATIONS_KEPT = 50;

/** A violation as kept for Health > Database: the account it was alerted to, named. */
export interface StoredViolation extends Violation {
  /** The account that got the alert (the violation's own, or the operator account); null when none. */
  alertedAccountId: string | null;
  accountName: string | null;
}

/** The last run, as Health > Database shows it. */
export interface InvariantCheckRecord {
  trigger: InvariantTrigger;
  startedAt: string;
  durationMs: number;
  /** Every section was read in full; false when the bounds cut the run short. */
  complete: boolean;
  entriesRead: number;
  maxEntries: number | null;
  timeBoxMs: number | null;
  sections: SectionOutcome[];
  violationCount: number;
  /** The first INVARIANT_VIOLATIONS_KEPT violations. */
  violations: StoredViolation[];
  /** Where the next run starts (a partial run's cut section). */
  nextSection: number;
  /** Accounts with an open `invariant_violation` alert after this run. */
  alertedAccountIds: string[];
}

export interface InvariantRunOptions {
  now: Date;
  trigger: InvariantTrigger;
  /** A monotonic clock in milliseconds; the caller passes it (domain code reads no clock). */
  elapsedMs: () => number;
  maxEntries?: number;
  timeBoxMs?: number;
}

/**
 * Runs the bounded check (violations confirmed by a second read, see InvariantBounds.confirm), raises or
 * resolves the alerts, and stores the result. Returns the record and every violation found (the record
 * keeps only the first few).
 */
export async function runInvariantCheck(
  kv: Deno.Kv,
  options: InvariantRunOptions,
): Promise<{ record: InvariantCheckRecord; violations: Violation[] }> {
  const { now, trigger, elapsedMs } = options;
  const started = elapsedMs();
  const last = (await kv.get<InvariantCheckRecord>(lastInvariantCheckKey())).value;
  const report = await checkInvariantsBounded(kv, {
    maxEntries: options.maxEntries,
    timeBoxMs: options.timeBoxMs,
    elapsedMs,
    startSection: last && !last.complete ? last.nextSection : 0,
    confirm: true,
  });

  const accounts = new Map((await listAccounts(kv)).map((a) => [a.id, a]));
  // The operator account is the oldest one (see authorizePlatformAdmin); ids are time-ordered.
  const operatorId = [...accounts.keys()].sort()[0] ?? null;
  const alertedTo = (v: Violation) => v.accountId && accounts.has(v.accountId) ? v.accountId : operatorId;
  const byAccount = new Map<string, Violation[]>();
  for (const v of report.violations) {
    const to = alertedTo(v);
    if (to) byAccount.set(to, [...byAccount.get(to) ?? [], v]);
  }
  for (const [accountId, found] of byAccount) {
    await raiseViolationAlert(kv, { id: accountId, name: accounts.get(accountId)!.name }, found, now);
  }
  if (report.complete) {
    for await (const e of kv.list<string>({ prefix: openAlertsOfTypePrefix("account") })) {
      const accountId = String(e.key[2]);
      if (e.key[3] !== "invariant_violation" || byAccount.has(accountId)) continue;
      await resolveViolationAlert(kv, accountId, now);
    }
  }
  const stillOpen: string[] = [];
  for await (const e of kv.list<string>({ prefix: openAlertsOfTypePrefix("account") })) {
    if (e.key[3] === "invariant_violation") stillOpen.push(String(e.key[2]));
  }

  const record: InvariantCheckRecord = {
    trigger,
    startedAt: now.toISOString(),
    durationMs: Math.round(elapsedMs() - started),
    complete: report.complete,
    entriesRead: report.entriesRead,
    maxEntries: options.maxEntries ?? null,
    timeBoxMs: options.timeBoxMs ?? null,
    sections: report.sections,
    violationCount: report.violations.length,
    violations: report.violations.slice(0, INVARIANT_VIOLATIONS_KEPT).map((v) => {
      const to = alertedTo(v);
      return { ...v, alertedAccountId: to, accountName: to ? accounts.get(to)?.name ?? null : null };
    }),
    nextSection: report.nextSection,
    alertedAccountIds: stillOpen,
  };
  await kv.set(lastInvariantCheckKey(), record);
  return { record, violations: report.violations };
}

function violationMessage(found: Violation[]): string {
  const n = found.length;
  return `The consistency check found ${n} stored-data invariant violation${n === 1 ? "" : "s"}, e.g. ` +
    `${found[0].message}. Platform administrators see them all on Health > Database.`;
}

async function raiseViolationAlert(
  kv: Deno.Kv,
  account: { id: string; name: string },
  found: Violation[],
  now: Date,
): Promise<Alert | null> {
  // Commit retry (retry.ts): five lost races throw CommitConflictError — a violation found must never end
  // the run as if its critical alert had been raised.
  return await withRetry(
    async () => {
      const op = kv.atomic();
      const alert = raiseAlert(op, await readOpenAlert(kv, "account", account.id, "invariant_violation"), {
        accountId: account.id,
        orgId: null,
        subjectType: "account",
        subjectId: account.id,
        subjectName: account.name,
        reason: "invariant_violation",
        severity: "critical",
        message: violationMessage(found),
      }, now);
      return (await op.commit()).ok ? { value: alert } : null;
    },
    5,
    `The invariant-violation alert of account ${account.id} conflicted; run the check again`,
  );
}

async function resolveViolationAlert(kv: Deno.Kv, accountId: string, now: Date): Promise<void> {
  try {
    await withRetry(async () => {
      const op = kv.atomic();
      const open = await readOpenAlert(kv, "account", accountId, "invariant_violation");
      if (!resolveAlert(op, open, now)) return { value: undefined };
      return (await op.commit()).ok ? { value: undefined } : null;
    }, 5);
  } catch (error) {
    // Giving up is deliberate, not a dropped change: the alert stays open (the run's record lists it in
    // `stillOpen`, read back from KV, so nothing claims it was resolved) and the next complete run
    // resolves it.
    if (!(error instanceof CommitConflictError)) throw error;
  }
}

/** The last run's result for Health > Database (platform administrators only); null before the first. */
export async function getLastInvariantCheck(kv: Deno.Kv, actor: Actor): Promise<InvariantCheckRecord | null> {
  await authorizePlatformAdmin(kv, actor);
  return (await kv.get<InvariantCheckRecord>(lastInvariantCheckKey())).value;
}
