/**
 * The consistency check: after a resumed (killed) deletion cascade and on start, bounded by entries and
 * time, logged, alerted per account (critical, resolved by a later clean complete run) and shown on
 * Health > Database.
 */
import assert from "node:assert/strict";
import { type Alert, readOpenAlert } from "../../domain/alerts.ts";
import {
  assignHost,
  assignmentByHostKey,
  assignmentByPolicyKey,
  purgeOrphanAssignments,
} from "../../domain/assignments.ts";
import { getEngine, markEngineDeleting } from "../../domain/engines.ts";
import { enrollHost, hostsByAccountKey } from "../../domain/hosts.ts";
import { type InvariantCheckRecord, lastInvariantCheckKey } from "../../domain/invariant_checks.ts";
import { checkInvariants, checkInvariantsBounded, INVARIANT_SECTIONS } from "../../domain/invariants.ts";
import { createLogger } from "../../domain/log.ts";
import { createPolicy, deletePolicyCascade } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget, targetKey, targetsByAccountKey, targetsByBesKey } from "../../domain/storage.ts";
import { vaultKey } from "../../domain/vault.ts";
import { checkStoredInvariants } from "../../jobs/check_invariants.ts";
import { resumeDeletions } from "../../jobs/resume_deletions.ts";
import {
  addUser,
  Browser,
  createTenant,
  registerTestEngine,
  signInAs,
  targetInput,
  type Tenant,
  testApp,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

/** Acme (the operator account) with a BES, a target, a policy and an assigned host; Globex with a BES. */
async function world(kv: Deno.Kv) {
  const { app, clock } = testApp(kv);
  const now = clock.now();
  const acme = await createTenant(kv, "Acme", ["Ops"], now);
  const globex = await createTenant(kv, "Globex", ["Lab"], now);
  const scope = { accountId: acme.account.id, orgId: acme.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, now, "doomed");
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const policy = await createPolicy(kv, system, {
    name: "nightly",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * *",
  }, now);
  const { host } = await enrollHost(kv, scope, {
    hostname: "web-01.acme.example",
    os: "Ubuntu 24.04",
    ipAddress: "10.1.0.5",
    publicKey: generateKeyPair().publicKey,
    version: "1.0.0",
  }, now);
  const { assignment } = await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
  await registerTestEngine(kv, { accountId: globex.account.id, orgId: globex.orgs[0].id }, now, "kept");
  const admin = await addUser(kv, acme, "admin@acme.example", "admin", "all", now);
  const browser = new Browser(app);
  await signInAs(browser, kv, admin, now);
  return { app, clock, acme, globex, engine, target, policy, host, assignment, browser };
}

function captureLogs() {
  const lines: string[] = [];
  const logger = createLogger("debug", (line) => lines.push(line));
  const entries = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, entries, lines };
}

async function openAlert(kv: Deno.Kv, tenant: Tenant): Promise<Alert | null> {
  return (await readOpenAlert(kv, "account", tenant.account.id, "invariant_violation")).alert?.value ?? null;
}

async function databasePage(browser: Browser): Promise<string> {
  const res = await browser.request("/health/database");
  assert.equal(res.status, 200);
  return await res.text();
}

/** A clock that moves `step` ms each time it is read. */
function steppingClock(step: number) {
  let t = 0;
  return () => (t += step);
}

Deno.test("invariants after a killed cascade: the resume job checks, logs the violation, raises a critical alert, and Health > Database shows it", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await world(kv);
  assert.match(await databasePage(w.browser), /Never run/, "the empty state before any run");
  assert.deepEqual(await checkInvariants(kv), []);

  // The crash: deleteEngine marked the BES deleting and its policy cascade had cleared the assignment's
  // index entries (as a cascade that swept only the child prefixes did) but not its record; then the
  // process died. The resumed cascade finds the policy's children through those indexes: the record stays.
  await markEngineDeleting(kv, system, w.engine.id, w.clock.now());
  await kv.atomic()
    .delete(assignmentByPolicyKey(w.policy.id, w.host.id))
    .delete(assignmentByHostKey(w.host.id, w.policy.id))
    .commit();

  const log = captureLogs();
  w.clock.advance(60_000);
  const result = await resumeDeletions(kv, w.clock.now(), { logger: log.logger });
  assert.equal(result.resumed, 1);
  assert.equal(await getEngine(kv, w.engine.id), null, "the cascade finished");
  assert.ok(result.invariants, "the check ran after the resumed cascade");
  assert.equal(result.invariants.complete, true);
  assert.ok(result.invariants.violations >= 1);

  const orphan = `assignment ${w.assignment.id} belongs to missing policy ${w.policy.id}`;
  const logged = log.entries().filter((l) => l.msg === "invariant violation");
  assert.ok(
    logged.some((l) => l.level === "error" && l.violation === orphan && l.accountId === w.acme.account.id),
    `the violation is logged: ${log.lines.join("\n")}`,
  );
  assert.ok(log.entries().some((l) => l.msg === "invariant check" && l.complete === true));

  const alert = await openAlert(kv, w.acme);
  assert.ok(alert, "Acme has an open invariant_violation alert");
  assert.equal(alert.severity, "critical");
  assert.equal(alert.subjectType, "account");
  assert.equal(alert.orgId, null);
  assert.match(alert.message, /invariant violation/);
  assert.equal(await openAlert(kv, w.globex), null, "Globex's data is fine: no alert there");
  const events = await Array.fromAsync(
    kv.list<{ reason: string; event: string }>({ prefix: ["alert_events"] }),
  );
  assert.ok(events.some((e) => e.value.reason === "invariant_violation" && e.value.event === "opened"));

  const stored = (await kv.get<InvariantCheckRecord>(lastInvariantCheckKey())).value!;
  assert.equal(stored.trigger, "resumed_deletion");
  assert.equal(stored.complete, true);
  assert.deepEqual(stored.alertedAccountIds, [w.acme.account.id]);
  assert.ok(stored.violations.some((v) => v.message === orphan && v.accountName === "Acme"));

  const html = await databasePage(w.browser);
  assert.match(html, /Consistency check/);
  assert.match(html, /after a resumed engine deletion/);
  assert.match(html, /complete/);
  assert.ok(html.includes(orphan), "the page says what is wrong");
  assert.doesNotMatch(html, /Never run/);
  // The alert shows on the account's alert list too.
  assert.match(await (await w.browser.request("/backup/alerts")).text(), /stored-data invariant violation/);

  // Repaired, the next complete run is clean and resolves the alert.
  await purgeOrphanAssignments(kv, w.clock.now());
  assert.deepEqual(await checkInvariants(kv), []);
  w.clock.advance(60_000);
  const clean = await checkStoredInvariants(kv, w.clock.now(), { trigger: "startup" });
  assert.deepEqual([clean.complete, clean.violations], [true, 0]);
  assert.equal(await openAlert(kv, w.acme), null, "resolved");
  const after = await databasePage(w.browser);
  assert.match(after, /on start/);
  assert.ok(!after.includes(orphan));
  assert.deepEqual(await checkInvariants(kv), [], "the alert bookkeeping itself is consistent");
});

Deno.test("a deletion cascade in progress is not a violation: a killed cascade is skipped, a real violation elsewhere is reported, and after the resume the check is clean", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await world(kv);
  const scope = { accountId: w.acme.account.id, orgId: w.acme.orgs[0].id };
  const now = w.clock.now();
  const second = await createTarget(kv, system, targetInput(w.engine.id, "local", { name: "second" }), {
    now,
    masterKey,
  });
  // A live policy of another BES keeps its own target's count right throughout.
  const { engine: other } = await registerTestEngine(kv, scope, now, "other");
  const otherTarget = await createTarget(kv, system, targetInput(other.id), { now, masterKey });
  await createPolicy(kv, system, {
    name: "weekly",
    besId: other.id,
    targetId: otherTarget.id,
    backupType: "file",
    fullSchedule: "0 3 * * 0",
  }, now);
  assert.deepEqual(await checkInvariants(kv), []);

  // The crash: deleteEngine marked the BES deleting, the cascade deleted its policy (the target still
  // counts it: targets go later, whole) and one of its two targets (the engine still lists it); then the
  // process died.
  await markEngineDeleting(kv, system, w.engine.id, now);
  await deletePolicyCascade(kv, w.policy, now);
  const { credentialId } = (await kv.get<{ credentialId: string | null }>(targetKey(second.id))).value!;
  const dropTarget = kv.atomic()
    .delete(targetsByBesKey(w.engine.id, second.id))
    .delete(targetKey(second.id))
    .delete(targetsByAccountKey(w.acme.account.id, second.id));
  if (credentialId) dropTarget.delete(vaultKey(credentialId));
  assert.ok((await dropTarget.commit()).ok);
  // A real violation elsewhere: Globex's host index points at a host that does not exist.
  await kv.set(hostsByAccountKey(w.globex.account.id, "host-gone"), "host-gone");
  const real = "hosts_by_account points to missing or foreign host host-gone";

  assert.deepEqual(await checkInvariants(kv), [real], "only the real violation");
  const log = captureLogs();
  const started = await checkStoredInvariants(kv, now, { trigger: "startup", logger: log.logger });
  assert.deepEqual([started.complete, started.violations], [true, 1]);
  assert.equal(await openAlert(kv, w.acme), null, "no alert for the cascade in progress");
  assert.ok(await openAlert(kv, w.globex), "the real violation is alerted");
  assert.deepEqual(
    log.entries().filter((l) => l.msg === "invariant violation").map((l) => l.violation),
    [real],
  );

  w.clock.advance(60_000);
  const resumed = await resumeDeletions(kv, w.clock.now());
  assert.equal(resumed.resumed, 1);
  assert.equal(await getEngine(kv, w.engine.id), null, "the cascade finished");
  assert.equal(resumed.invariants?.violations, 1, "still only the real violation");
  assert.equal(await openAlert(kv, w.acme), null);

  await kv.delete(hostsByAccountKey(w.globex.account.id, "host-gone"));
  const clean = await checkStoredInvariants(kv, w.clock.now(), { trigger: "startup" });
  assert.deepEqual([clean.complete, clean.violations], [true, 0]);
  assert.equal(await openAlert(kv, w.globex), null, "resolved");
});

Deno.test("checkInvariantsBounded() stops at its entry bound or time box, says partial, and the next run continues where it stopped", async () => {
  using kv = await Deno.openKv(":memory:");
  await world(kv);
  const full = await checkInvariantsBounded(kv);
  assert.equal(full.complete, true);
  assert.ok(full.sections.every((s) => s.status === "checked"));
  assert.ok(full.entriesRead > 25, `read ${full.entriesRead}`);

  for (
    const bounds of [
      { maxEntries: 10 },
      { timeBoxMs: 10, elapsedMs: steppingClock(1) },
    ]
  ) {
    const cut = await checkInvariantsBounded(kv, bounds);
    assert.equal(cut.complete, false, JSON.stringify(bounds));
    assert.ok(cut.entriesRead <= 11, `read ${cut.entriesRead}`);
    const statuses = cut.sections.map((s) => s.status);
    assert.equal(statuses.filter((s) => s === "cut").length, 1);
    assert.equal(statuses.at(-1), "not_reached");
    assert.deepEqual(cut.violations, []);
  }

  // Rotating through the sections, bounded runs together cover every one; a section larger than the
  // bound on its own (hosts reads 12 entries here, the engines included) is passed over, so it cannot starve the others.
  const rotate = async (maxEntries: number) => {
    const seen = new Set<string>();
    let start = 0;
    for (let run = 0; run < 12; run++) {
      const r = await checkInvariantsBounded(kv, { maxEntries, startSection: start });
      assert.equal(r.complete, false);
      for (const s of r.sections) if (s.status === "checked") seen.add(s.name);
      start = r.nextSection;
    }
    return [...seen].sort();
  };
  const all = INVARIANT_SECTIONS.map((s) => s.name).sort();
  assert.deepEqual(await rotate(12), all);
  assert.deepEqual(await rotate(9), all.filter((s) => s !== "hosts"));
});

Deno.test("a partial run is stored and shown as partial and never resolves an alert; a complete clean one does", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await world(kv);
  // A violation: the policy's target lost its reference count.
  const targetEntry = await kv.get<{ policyCount: number }>(["storage_targets", w.target.id]);
  await kv.set(["storage_targets", w.target.id], { ...targetEntry.value!, policyCount: 7 });
  const raised = await checkStoredInvariants(kv, w.clock.now(), { trigger: "startup" });
  assert.equal(raised.violations, 1);
  assert.ok(await openAlert(kv, w.acme));

  await kv.set(["storage_targets", w.target.id], targetEntry.value!);
  const log = captureLogs();
  const partial = await checkStoredInvariants(kv, w.clock.now(), {
    trigger: "startup",
    maxEntries: 5,
    logger: log.logger,
  });
  assert.deepEqual([partial.complete, partial.violations], [false, 0]);
  assert.ok(partial.entriesRead <= 5);
  assert.ok(
    log.entries().some((l) => l.msg === "invariant check" && l.level === "warn" && l.complete === false),
  );
  assert.ok(await openAlert(kv, w.acme), "a partial run did not look everywhere: the alert stays");
  const record = (await kv.get<InvariantCheckRecord>(lastInvariantCheckKey())).value!;
  assert.equal(record.complete, false);
  assert.equal(record.maxEntries, 5);
  const html = await databasePage(w.browser);
  assert.match(html, /partial/);
  assert.match(html, /cut short/);
  assert.match(html, /not reached/);

  // The next run starts where the partial one stopped; unbounded, it completes and resolves.
  const complete = await checkStoredInvariants(kv, w.clock.now(), {
    trigger: "startup",
    maxEntries: 1_000_000,
  });
  assert.deepEqual([complete.complete, complete.violations], [true, 0]);
  assert.equal(await openAlert(kv, w.acme), null);
});

Deno.test("checkInvariantsBounded({ confirm }) drops a violation that a second read does not see (a racing write)", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await world(kv);
  // The first read of the alert counters sees a count a concurrent raise had just bumped.
  let racing = true;
  const flaky = new Proxy(kv, {
    get(target, prop) {
      if (prop === "list") {
        return (selector: { prefix: Deno.KvKey }, options?: Deno.KvListOptions) => {
          if (racing && selector.prefix[0] === "alert_counts") {
            racing = false;
            return (async function* () {
              yield {
                key: ["alert_counts", w.acme.account.id, "-", "open"],
                value: new Deno.KvU64(1n),
                versionstamp: "00000000000000000000",
              };
            })();
          }
          return target.list(selector, options);
        };
      }
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const confirmed = await checkInvariantsBounded(flaky, { confirm: true });
  assert.deepEqual(confirmed.violations, []);
  assert.equal(racing, false, "the racing read happened");

  racing = true;
  const unconfirmed = await checkInvariantsBounded(flaky);
  assert.equal(unconfirmed.violations.length, 1);
  assert.equal(unconfirmed.violations[0].accountId, w.acme.account.id);
  assert.equal(unconfirmed.violations[0].section, "alerts");
});

Deno.test("violations no account can be told for go to the operator account's alert", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await world(kv);
  await kv.set(["engines_by_public_key", "dangling-key"], "no-such-engine");
  await checkStoredInvariants(kv, w.clock.now(), { trigger: "startup" });
  const alert = await openAlert(kv, w.acme);
  assert.ok(alert, "Acme, the oldest account, runs the platform");
  assert.match(alert.message, /engines_by_public_key points to missing engine no-such-engine/);
  assert.equal(await openAlert(kv, w.globex), null);
});
