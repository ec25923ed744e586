/** The pure rules of restore drills (domain/drills.ts): due computation, scope resolution, verdict and breach. */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type CandidatePoint,
  drillFiresInMinute,
  DrillInput,
  drillVerdict,
  pickDrillTargets,
  readDrillReport,
  rtoBreached,
  rtoObjectiveFor,
} from "../../domain/drills.ts";
import { seededRandom } from "../../engine/agent/worker_drill.ts";

Deno.test("due: a drill fires in the minutes its UTC cron names, whatever the seconds", () => {
  // 2026-12-05 is a Saturday.
  assert.equal(drillFiresInMinute("0 3 * * 6", new Date("2026-12-05T03:00:00Z")), true);
  assert.equal(drillFiresInMinute("0 3 * * 6", new Date("2026-12-05T03:00:59.999Z")), true);
  assert.equal(drillFiresInMinute("0 3 * * 6", new Date("2026-12-05T03:01:00Z")), false);
  assert.equal(drillFiresInMinute("0 3 * * 6", new Date("2026-12-05T02:59:59Z")), false);
  assert.equal(drillFiresInMinute("0 3 * * 6", new Date("2026-12-06T03:00:00Z")), false, "a Sunday");
  assert.equal(drillFiresInMinute("not a cron", new Date("2026-12-05T03:00:00Z")), false);
});

Deno.test("due (property): */N fires exactly in the minutes divisible by N", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(1, 2, 5, 10, 15, 20, 30),
      fc.integer({ min: 0, max: 60 * 24 * 366 }),
      fc.integer({ min: 0, max: 59_999 }),
      (n, minutes, ms) => {
        const at = new Date(Date.UTC(2026, 0, 1) + minutes * 60_000 + ms);
        return drillFiresInMinute(`*/${n} * * * *`, at) === (at.getUTCMinutes() % n === 0);
      },
    ),
    { numRuns: 300 },
  );
});

function point(
  id: string,
  policyId: string,
  hostId: string | null,
  completedAt: string,
  status: CandidatePoint["status"] = "complete",
): CandidatePoint {
  return { id, policyId, hostId, completedAt, status, engineRestorePointId: `e-${id}` };
}

Deno.test("scope: the newest complete point of every (policy, host) of a policy scope", () => {
  const points = [
    point("01", "P1", "H1", "2026-12-01T00:00:00Z"),
    point("02", "P1", "H1", "2026-12-02T00:00:00Z"),
    point("03", "P1", "H1", "2026-12-03T00:00:00Z", "failed"),
    point("04", "P1", "H1", "2026-12-04T00:00:00Z", "expired"),
    point("05", "P1", "H2", "2026-12-01T00:00:00Z"),
    point("06", "P1", "H2", "2026-12-01T00:00:00Z"), // same time: the larger id wins
    point("07", "P2", "H1", "2026-12-05T00:00:00Z"), // another policy: out of scope
    point("08", "P1", null, "2026-12-06T00:00:00Z"), // a BES-made point: no host to restore from
    point("09", "P1", "H3", "2026-12-06T00:00:00Z", "running"),
  ];
  const picked = pickDrillTargets({ scopeType: "policies", policyIds: ["P1"], hostIds: ["H1"] }, points);
  assert.deepEqual(picked.map((p) => p.id), ["02", "06"]);
});

Deno.test("scope: a host scope takes every policy of the listed hosts, and only theirs", () => {
  const points = [
    point("01", "P1", "H1", "2026-12-01T00:00:00Z"),
    point("02", "P2", "H1", "2026-12-02T00:00:00Z"),
    point("03", "P2", "H2", "2026-12-03T00:00:00Z"),
  ];
  const picked = pickDrillTargets({ scopeType: "hosts", policyIds: ["P2"], hostIds: ["H1"] }, points);
  assert.deepEqual(picked.map((p) => p.id), ["01", "02"]);
  assert.deepEqual(pickDrillTargets({ scopeType: "hosts", policyIds: [], hostIds: ["H9"] }, points), []);
});

Deno.test("scope (property): one target per pair, each the newest complete in-scope point of its pair", () => {
  const arbPoint = fc.record({
    id: fc.stringMatching(/^[0-9A-Z]{4}$/),
    policyId: fc.constantFrom("P1", "P2", "P3"),
    hostId: fc.constantFrom("H1", "H2", null),
    completedAt: fc.integer({ min: 0, max: 20 }).map((d) => new Date(Date.UTC(2026, 0, 1 + d)).toISOString()),
    status: fc.constantFrom("complete", "complete", "failed", "expired", "running") as fc.Arbitrary<
      CandidatePoint["status"]
    >,
  }).map((p) => ({ ...p, engineRestorePointId: p.id }));
  fc.assert(
    fc.property(
      fc.array(arbPoint, { maxLength: 40 }),
      fc.subarray(["P1", "P2", "P3"]),
      (points, policyIds) => {
        const picked = pickDrillTargets({ scopeType: "policies", policyIds, hostIds: [] }, points);
        const pairs = picked.map((p) => `${p.policyId}/${p.hostId}`);
        assert.equal(new Set(pairs).size, pairs.length);
        for (const p of picked) {
          assert.equal(p.status, "complete");
          assert.ok(policyIds.includes(p.policyId) && p.hostId !== null);
          for (const q of points) {
            if (q.status !== "complete" || q.policyId !== p.policyId || q.hostId !== p.hostId) continue;
            assert.ok(q.completedAt < p.completedAt || (q.completedAt === p.completedAt && q.id <= p.id));
          }
        }
        const eligible = new Set(
          points.filter((q) => q.status === "complete" && q.hostId && policyIds.includes(q.policyId))
            .map((q) => `${q.policyId}/${q.hostId}`),
        );
        assert.equal(picked.length, eligible.size);
      },
    ),
    { numRuns: 300 },
  );
});

const report = (over: Partial<ReturnType<typeof baseReport>> = {}) => ({ ...baseReport(), ...over });
function baseReport() {
  return {
    files: 10,
    bytes: 10_000_000,
    verified: 10,
    restoreMs: 2000,
    failures: [] as Array<{ path: string; message: string }>,
    failureCount: 0,
    scratchRemoved: true,
  };
}

Deno.test("breach rule: strictly above the objective breaches it", () => {
  assert.equal(rtoBreached(60, 60), false);
  assert.equal(rtoBreached(60.001, 60), true);
  assert.equal(rtoBreached(0, 1), false);
  fc.assert(
    fc.property(
      fc.double({ min: 0, max: 1e6, noNaN: true }),
      fc.integer({ min: 1, max: 604_800 }),
      (rto, obj) => {
        return rtoBreached(rto, obj) === (rto > obj) &&
          rtoBreached(rto * 2, obj * 2) === rtoBreached(rto, obj);
      },
    ),
  );
});

Deno.test("verdict: passes only when every selected file restored and verified and the scratch copy is gone", () => {
  assert.deepEqual(drillVerdict("success", report(), 60), {
    status: "passed",
    rtoSeconds: 2,
    bytesPerSecond: 5_000_000,
    breached: false,
  });
  assert.equal(drillVerdict("success", report(), 1).breached, true, "2 s against a 1 s objective");
  const failing = [
    drillVerdict("failed", report(), 60),
    drillVerdict("warning", report(), 60),
    drillVerdict("success", report({ failures: [{ path: "/a", message: "damaged" }], failureCount: 1 }), 60),
    drillVerdict("success", report({ failureCount: 3 }), 60),
    drillVerdict("success", report({ verified: 9 }), 60),
    drillVerdict("success", report({ files: 0, verified: 0 }), 60),
    drillVerdict("success", report({ scratchRemoved: false }), 60),
    drillVerdict("success", null, 60),
  ];
  for (const v of failing) {
    assert.equal(v.status, "failed", JSON.stringify(v));
    assert.equal(v.breached, false, "a failed drill has no RTO to judge");
  }
});

Deno.test("reports are read leniently: a malformed one is no report, failures are capped and counted", () => {
  assert.equal(readDrillReport(null), null);
  assert.equal(readDrillReport({ drill: { files: "3", bytes: 1, restoreMs: 1 } }), null);
  assert.equal(readDrillReport({ drill: { files: 1, bytes: 1, restoreMs: -1 } }), null);
  const many = Array.from({ length: 150 }, (_, i) => ({ path: `/f${i}`, message: "bad" }));
  const r = readDrillReport({
    drill: {
      files: 200,
      bytes: 9,
      restoreMs: 5,
      verified: 50,
      failures: [...many, { nope: 1 }],
      failureCount: 150,
    },
  })!;
  assert.equal(r.failures.length, 100);
  assert.equal(r.failureCount, 150);
  assert.equal(r.scratchRemoved, false, "only an explicit true counts");
});

Deno.test("input: named field errors for a bad cron, an empty scope, a root scratch folder, unknown fields", () => {
  const base = {
    name: "d",
    schedule: "0 3 * * 6",
    scopeType: "policies",
    policyIds: ["01JBQ6Z3S8V1N2M4K5P7R9T0WX"],
    agentHostId: "01JBQ6Z3S8V1N2M4K5P7R9T0WY",
    scratchPath: "/var/tmp/drills/",
    rtoObjectiveSeconds: 60,
  };
  const ok = DrillInput.parse(base);
  assert.equal(ok.scratchPath, "/var/tmp/drills");
  assert.equal(ok.mode, "sample");
  assert.equal(ok.sampleCount, 20);
  const fieldOf = (input: unknown) => {
    const r = DrillInput.safeParse(input);
    assert.ok(!r.success);
    return r.error.issues.map((i) => i.code === "unrecognized_keys" ? i.keys.join() : i.path.join("."));
  };
  assert.deepEqual(fieldOf({ ...base, schedule: "* * *" }), ["schedule"]);
  assert.deepEqual(fieldOf({ ...base, policyIds: [] }), ["policyIds"]);
  assert.deepEqual(fieldOf({ ...base, scopeType: "hosts" }), ["hostIds"]);
  assert.deepEqual(fieldOf({ ...base, scratchPath: "/" }), ["scratchPath"]);
  assert.deepEqual(fieldOf({ ...base, scratchPath: "relative/dir" }), ["scratchPath"]);
  assert.deepEqual(fieldOf({ ...base, rtoObjectiveSeconds: 0 }), ["rtoObjectiveSeconds"]);
  assert.deepEqual(fieldOf({ ...base, sampleCount: 5000 }), ["sampleCount"]);
  assert.deepEqual(fieldOf({ ...base, sheduel: "x" }), ["sheduel"]);
});

Deno.test("the sample's generator is deterministic per seed and spreads over [0, 1)", () => {
  const a = seededRandom("01JDRILLRUN");
  const b = seededRandom("01JDRILLRUN");
  const xs = Array.from({ length: 1000 }, () => a());
  assert.deepEqual(xs, Array.from({ length: 1000 }, () => b()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const low = xs.filter((x) => x < 0.5).length;
  assert.ok(low > 400 && low < 600, `${low} of 1000 below 0.5`);
  assert.notDeepEqual(xs.slice(0, 5), Array.from({ length: 5 }, seededRandom("another")));
});

Deno.test("a policy's own RTO objective wins over the drill's; one policy named twice is refused", () => {
  const drill = {
    rtoObjectiveSeconds: 600,
    policyRtoObjectives: [{ policyId: "P1", rtoObjectiveSeconds: 60 }],
  };
  assert.equal(rtoObjectiveFor(drill, "P1"), 60);
  assert.equal(rtoObjectiveFor(drill, "P2"), 600);
  const id = "01JBQ6Z3S8V1N2M4K5P7R9T0WX";
  const r = DrillInput.safeParse({
    name: "d",
    schedule: "0 3 * * 6",
    scopeType: "policies",
    policyIds: [id],
    agentHostId: id,
    scratchPath: "/x",
    rtoObjectiveSeconds: 60,
    policyRtoObjectives: [{ policyId: id, rtoObjectiveSeconds: 5 }, { policyId: id, rtoObjectiveSeconds: 6 }],
  });
  assert.ok(!r.success);
  assert.deepEqual(r.error.issues.map((i) => i.path.join(".")), ["policyRtoObjectives.1"]);
});
