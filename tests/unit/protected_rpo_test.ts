import assert from "node:assert/strict";
import { afterBackup, isRpoBreached, type ProtectedObject } from "../../domain/protected.ts";

const T0 = Date.parse("2026-11-01T00:00:00Z");
const at = (minutes: number) => new Date(T0 + minutes * 60_000);
const iso = (minutes: number) => at(minutes).toISOString();

function object(overrides: Partial<ProtectedObject> = {}): ProtectedObject {
  return {
    id: "o1",
    accountId: "a1",
    orgId: "g1",
    hostId: "h1",
    policyId: "p1",
    name: "h1.example",
    type: "fileset",
    source: { kind: "bes", besId: "b1" },
    rpoHours: 3,
    lastBackupAt: null,
    lastBackupStatus: "never",
    lastSuccessAt: null,
    lastRestorePointId: null,
    activeSince: iso(0),
    breached: false,
    protection: "active",
    createdAt: iso(0),
    updatedAt: iso(0),
    ...overrides,
  };
}

Deno.test("afterBackup(): a success that arrives after a later failure still restarts the RPO clock", () => {
  const failed = afterBackup(
    object(),
    { status: "failed", endedAt: iso(176), restorePointId: null },
    at(176),
  )!;
  assert.equal(failed.lastBackupStatus, "failed");
  assert.equal(failed.lastSuccessAt, null);
  // The success ended at minute 175, before the failure, but its result is posted later.
  const next = afterBackup(failed, { status: "success", endedAt: iso(175), restorePointId: "rp1" }, at(181))!;
  assert.ok(next, "an older success is not dropped");
  assert.equal(next.lastBackupAt, iso(176), "the last backup is still the later failure");
  assert.equal(next.lastBackupStatus, "failed");
  assert.equal(next.lastSuccessAt, iso(175));
  assert.equal(next.lastRestorePointId, "rp1");
  assert.equal(isRpoBreached(next, at(181)), false, "175 + 3 h is after 181");
  assert.equal(isRpoBreached(next, at(175 + 180)), false, "exactly the RPO: within");
  assert.equal(isRpoBreached(next, new Date(at(175 + 180).getTime() + 1)), true);
});

Deno.test("afterBackup(): an older result changes nothing when it is a failure or an older success", () => {
  const o = object({
    lastBackupAt: iso(100),
    lastBackupStatus: "success",
    lastSuccessAt: iso(100),
    lastRestorePointId: "rp-new",
  });
  assert.equal(afterBackup(o, { status: "failed", endedAt: iso(90), restorePointId: null }, at(120)), null);
  assert.equal(
    afterBackup(o, { status: "success", endedAt: iso(90), restorePointId: "rp-old" }, at(120)),
    null,
  );
  const newer = afterBackup(o, { status: "warning", endedAt: iso(110), restorePointId: "rp-w" }, at(120))!;
  assert.deepEqual(
    [newer.lastBackupAt, newer.lastBackupStatus, newer.lastSuccessAt, newer.lastRestorePointId],
    [iso(110), "warning", iso(110), "rp-w"],
  );
});
