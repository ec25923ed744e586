/** File version history, the pure parts: versions collapsed from observations, cache staleness, job plans. */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  collapseVersions,
  HistoryPath,
  type HistoryPoint,
  MAX_HISTORY_JOB_POINTS,
  type Observation,
  ObservationItem,
  planJobs,
  sameVersion,
  staleness,
  VersionRestoreInput,
} from "../../domain/file_history.ts";
import { simulatedChildren, simulatedResult } from "../../tools/simulator.ts";

const H = (s: string) => s.repeat(64).slice(0, 64);

function point(i: number, extra: Partial<HistoryPoint> = {}): HistoryPoint {
  return {
    id: `P${String(i).padStart(25, "0")}`,
    engineRestorePointId: H(String(i % 10)),
    policyId: "POL",
    policyName: "files",
    engineId: "BES",
    completedAt: new Date(Date.UTC(2026, 0, 1 + i)).toISOString(),
    type: i === 0 ? "full" : "incremental",
    ...extra,
  };
}

function present(
  id: string,
  v: { size: number; mtime: string; chunks: string; sha?: string | null; mode?: number },
) {
  return {
    restorePointId: id,
    exists: true,
    type: "file" as const,
    size: v.size,
    mtime: v.mtime,
    mode: v.mode ?? 0o644,
    chunksId: H(v.chunks),
    contentId: v.sha === undefined ? H(`s${v.chunks}`) : v.sha,
  };
}

const A = { size: 10, mtime: "2026-01-01T00:00:00.000Z", chunks: "a" };
const B = { size: 12, mtime: "2026-01-03T00:00:00.000Z", chunks: "b" };

Deno.test("collapseVersions: five points, two versions of a file, newest first with their points", () => {
  const points = [0, 1, 2, 3, 4].map((i) => point(i));
  const obs = new Map<string, Observation>([
    [points[0].id, present(points[0].id, A)],
    [points[1].id, present(points[1].id, A)],
    [points[2].id, present(points[2].id, B)],
    [points[3].id, present(points[3].id, B)],
    [points[4].id, present(points[4].id, B)],
  ]);
  // Any input order: points are put in completion order.
  const versions = collapseVersions([...points].reverse(), obs);
  assert.equal(versions.length, 2);
  assert.deepEqual(versions.map((v) => [v.size, v.points.map((p) => p.id)]), [
    [12, [points[4].id, points[3].id, points[2].id]],
    [10, [points[1].id, points[0].id]],
  ]);
  assert.equal(versions[0].firstSeen, points[2].completedAt);
  assert.equal(versions[0].lastSeen, points[4].completedAt);
  assert.equal(versions[1].contentId, H("sa"));
});

Deno.test("collapseVersions: absence, a deletion and a return (A, gone, A) are three versions; unreadable stands alone", () => {
  const points = [0, 1, 2, 3, 4, 5].map((i) => point(i));
  const obs = new Map<string, Observation>([
    [points[0].id, { restorePointId: points[0].id, exists: false }],
    [points[1].id, present(points[1].id, A)],
    [points[2].id, { restorePointId: points[2].id, exists: false }],
    [points[3].id, { restorePointId: points[3].id, exists: false, error: "damaged tree" }],
    [points[4].id, present(points[4].id, A)],
    // points[5] has no observation yet: left out.
  ]);
  const versions = collapseVersions(points, obs);
  assert.deepEqual(versions.map((v) => v.state), ["present", "unreadable", "absent", "present", "absent"]);
  assert.equal(versions[1].error, "damaged tree");
  assert.equal(versions.flatMap((v) => v.points).length, 5);
});

Deno.test("sameVersion: content decides by hash when both are hashed, else by chunk list", () => {
  const x = present("1", A);
  // Same bytes in another repository: other chunk ids, same hash → same version.
  assert.ok(sameVersion(x, { ...x, chunksId: H("z") }));
  // Same size and time, other bytes.
  assert.ok(!sameVersion(x, { ...x, contentId: H("q"), chunksId: H("q") }));
  // One side not hashed: equal chunk lists are equal content; unequal ones are kept apart.
  assert.ok(sameVersion(x, { ...x, contentId: null }));
  assert.ok(!sameVersion(x, { ...x, contentId: null, chunksId: H("y") }));
  // Metadata: mode or mtime changed is another version.
  assert.ok(!sameVersion(x, { ...x, mode: 0o600 }));
  assert.ok(!sameVersion(x, { ...x, mtime: "2026-01-02T00:00:00.000Z" }));
  assert.ok(sameVersion({ restorePointId: "1", exists: false }, { restorePointId: "2", exists: false }));
});

Deno.test("collapseVersions (property): every observed point in exactly one version; neighbours differ", () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 0, maxLength: 40 }), (kinds) => {
      const points = kinds.map((_, i) => point(i));
      const obs = new Map<string, Observation>(points.map((p, i) => {
        const k = kinds[i];
        return [
          p.id,
          k === 0
            ? { restorePointId: p.id, exists: false }
            : present(p.id, { ...A, chunks: String(k), size: k }),
        ];
      }));
      const versions = collapseVersions(points, obs);
      const ids = versions.flatMap((v) => v.points.map((p) => p.id)).sort();
      assert.deepEqual(ids, points.map((p) => p.id).sort());
      // Runs in the input are exactly the versions.
      const runs = kinds.filter((k, i) => i === 0 || kinds[i - 1] !== k).length;
      assert.equal(versions.length, runs);
      for (let i = 1; i < versions.length; i++) {
        assert.ok(versions[i - 1].firstSeen > versions[i].lastSeen, "newest first, not overlapping");
      }
    }),
  );
});

Deno.test("staleness: new points are missing unless covered or pending; covered points no longer current are gone", () => {
  const { missing, gone } = staleness(["p5", "p4", "p3", "p2"], new Set(["p1", "p2", "p3"]), new Set(["p4"]));
  assert.deepEqual(missing, ["p5"]);
  assert.deepEqual(gone, ["p1"]);
  assert.deepEqual(staleness([], new Set(), new Set()), { missing: [], gone: [] });
  assert.deepEqual(staleness(["a"], new Set(["a"]), new Set()), { missing: [], gone: [] });
});

Deno.test("planJobs: one job per repository and BES, at most MAX_HISTORY_JOB_POINTS points each", () => {
  const g1 = { target: "T1", path: "cadres/POL/g1", generation: 1 };
  const g2 = { target: "T1", path: "cadres/POL/g2", generation: 2 };
  const points = [
    ...Array.from({ length: MAX_HISTORY_JOB_POINTS + 3 }, (_, i) => point(i, { repository: g1 })),
    point(200, { repository: g2 }),
    point(201, { repository: g2, engineId: "BES2" }),
  ];
  const jobs = planJobs(points);
  assert.deepEqual(jobs.map((j) => j.length), [MAX_HISTORY_JOB_POINTS, 3, 1, 1]);
  for (const j of jobs) {
    assert.equal(new Set(j.map((p) => `${p.engineId}/${p.repository?.path}`)).size, 1);
  }
});

Deno.test("HistoryPath and VersionRestoreInput: one clear error for bad input", () => {
  const path = HistoryPath;
  assert.equal(path.parse("/srv//data/./a.txt"), "/srv/data/a.txt");
  assert.match(path.safeParse("/").error!.issues[0].message, /not the root/);
  assert.match(path.safeParse("C:\\x.txt").error!.issues[0].message, /POSIX/);
  assert.match(path.safeParse("/a/../b").error!.issues[0].message, /\.\./);
  const base = { path: "/srv/a.txt", restorePointId: "01ARZ3NDEKTSV4RRFFQ69G5FAV" };
  assert.ok(VersionRestoreInput.safeParse(base).success);
  const noConfirm = VersionRestoreInput.safeParse({ ...base, overwrite: true });
  assert.deepEqual(noConfirm.error!.issues.map((i) => i.path.join(".")), ["confirm"]);
  assert.ok(VersionRestoreInput.safeParse({ ...base, overwrite: true, confirm: true }).success);
  const other = VersionRestoreInput.safeParse({ ...base, location: "other" });
  assert.deepEqual(other.error!.issues.map((i) => i.path.join(".")), ["targetPath"]);
});

Deno.test("the simulator answers file_history from each point's own tree, in the schema the control plane keeps", () => {
  const seed = "a".repeat(64);
  let folder = "/";
  let file: string | null = null;
  for (let depth = 0; depth < 6 && !file; depth++) {
    const children = simulatedChildren(seed, folder);
    file = children.find((c) => c.type === "file")?.path ?? null;
    folder = children.find((c) => c.type === "dir")?.path ?? folder;
  }
  assert.ok(file, "the simulated tree has a file");
  const job = {
    id: "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    kind: "file_history",
    payload: {
      path: file,
      points: [
        { restorePointId: "P1", engineRestorePointId: seed },
        { restorePointId: "P2", engineRestorePointId: seed },
        { restorePointId: "P3", engineRestorePointId: "b".repeat(64) },
      ],
    },
  };
  const result = simulatedResult(job, new Date("2026-11-20T00:00:00Z"));
  assert.equal(result.status, "success");
  const output = (result as { output?: { observations: unknown[] } }).output!;
  const obs = output.observations.map((o) => ObservationItem.parse(o));
  assert.deepEqual(obs.map((o) => o.restorePointId), ["P1", "P2", "P3"]);
  assert.ok(obs[0].exists && sameVersion(obs[0], obs[1]), "the same tree gives the same version");
});
