/**
 * The anomaly rule (domain/anomaly.ts) as a pure function: property tests (scaling the baseline scales the
 * threshold; a steady series never flags; a mass encryption over a steady series always does) and unit cases
 * for each signal, the learning period, fulls and unmeasured compression.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ANOMALY_RULE,
  type AnomalyRule,
  assessRun,
  mad,
  median,
  type RunFigures,
  shareThreshold,
  volumeThreshold,
} from "../../domain/anomaly.ts";

const MiB = 1024 * 1024;

function figures(over: Partial<RunFigures> = {}): RunFigures {
  return {
    at: "2026-12-01T02:00:00Z",
    kind: "incremental",
    files: 10_000,
    added: 5,
    modified: 20,
    deleted: 2,
    bytesNew: 200 * MiB,
    bytesNewIncompressible: 20 * MiB,
    protectedBytes: 50_000 * MiB,
    ...over,
  };
}

/** The rule without its absolute floors: what must scale exactly. */
const NO_FLOORS: AnomalyRule = {
  ...ANOMALY_RULE,
  fileShareFloor: 0,
  minChangedFiles: 0,
  byteShareFloor: 0,
  minBytesNew: 0,
  minIncompressibleBytes: 0,
};

const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));

Deno.test("median and MAD", () => {
  assert.equal(median([]), 0);
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(mad([1, 1, 2, 2, 4, 6, 9]), 1);
});

Deno.test("property: scaling the baseline by c scales the volume threshold by c", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 1_000_000 }), { minLength: 1, maxLength: 30 }),
      fc.double({ min: 0.01, max: 1000, noNaN: true }),
      (values, c) => {
        const t = volumeThreshold(values, 0);
        const scaled = volumeThreshold(values.map((v) => v * c), 0);
        assert.ok(close(scaled, c * t), `${scaled} != ${c} × ${t}`);
      },
    ),
    { numRuns: 500 },
  );
});

const runArb = fc.record({
  kind: fc.constantFrom<"full" | "incremental">("incremental", "incremental", "incremental", "full"),
  files: fc.integer({ min: 1, max: 1_000_000 }),
  added: fc.integer({ min: 0, max: 5_000 }),
  modified: fc.integer({ min: 0, max: 5_000 }),
  deleted: fc.integer({ min: 0, max: 5_000 }),
  bytesNew: fc.integer({ min: 1, max: 10_000_000_000 }),
  share: fc.double({ min: 0, max: 1, noNaN: true }),
  protectedBytes: fc.integer({ min: 0, max: 1e12 }),
}).map((r): RunFigures => ({
  at: "2026-12-01T02:00:00Z",
  kind: r.kind,
  files: r.files,
  added: r.added,
  modified: r.modified,
  deleted: r.deleted,
  bytesNew: r.bytesNew,
  bytesNewIncompressible: Math.round(r.bytesNew * r.share),
  protectedBytes: r.protectedBytes,
}));

function scale(f: RunFigures, c: number): RunFigures {
  return {
    ...f,
    files: f.files * c,
    added: f.added * c,
    modified: f.modified * c,
    deleted: f.deleted * c,
    bytesNew: f.bytesNew * c,
    bytesNewIncompressible: f.bytesNewIncompressible === null ? null : f.bytesNewIncompressible * c,
    protectedBytes: f.protectedBytes * c,
  };
}

Deno.test("property: scaling every figure of the baseline scales the rule's thresholds (and keeps the verdict)", () => {
  fc.assert(
    fc.property(
      fc.array(runArb, { minLength: ANOMALY_RULE.minHistory, maxLength: 30 }),
      runArb,
      fc.integer({ min: 2, max: 1000 }),
      (history, run, c) => {
        for (const rule of [NO_FLOORS, { ...ANOMALY_RULE, minChangedFiles: 0, minBytesNew: 0 }]) {
          const a = assessRun(history, run, rule);
          const b = assessRun(history.map((f) => scale(f, c)), scale(run, c), rule);
          assert.equal(a.checks.length, b.checks.length);
          for (const [i, check] of a.checks.entries()) {
            const other = b.checks[i];
            assert.equal(other.signal, check.signal);
            if (check.signal === "incompressible_share") {
              // A share does not scale: its threshold stays, the bytes behind it scale.
              assert.ok(close(other.threshold, check.threshold));
            } else {
              assert.ok(close(other.threshold, c * check.threshold), `${check.signal}: ${other.threshold}`);
            }
          }
          // Thresholds and values scale together: only the absolute incompressible floor may differ.
          if (rule === NO_FLOORS) assert.equal(b.flagged, a.flagged);
        }
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("property: with its floors, a baseline scaled up never gets a lower threshold", () => {
  fc.assert(
    fc.property(
      fc.array(runArb, { minLength: ANOMALY_RULE.minHistory, maxLength: 30 }),
      runArb,
      fc.integer({ min: 1, max: 100 }),
      (history, run, c) => {
        const a = assessRun(history, run);
        const b = assessRun(history.map((f) => scale(f, c)), run);
        for (const [i, check] of a.checks.entries()) {
          if (check.signal === "incompressible_share") continue;
          assert.ok(b.checks[i].threshold >= check.threshold - 1e-6);
        }
      },
    ),
    { numRuns: 300 },
  );
});

/** A steady series: every figure within ±50 % of its level, the share within ±0.15 of its own. */
const steadyArb = fc.record({
  level: fc.record({
    files: fc.integer({ min: 10, max: 2_000_000 }),
    changed: fc.integer({ min: 0, max: 50_000 }),
    bytesNew: fc.integer({ min: 0, max: 50_000_000_000 }),
    share: fc.double({ min: 0, max: 1, noNaN: true }),
  }),
  length: fc.integer({ min: 1, max: 40 }),
  seed: fc.integer(),
  measured: fc.boolean(),
});

type Steady = typeof steadyArb extends fc.Arbitrary<infer T> ? T : never;

function steadySeries(s: Steady): RunFigures[] {
  let x = s.seed >>> 0 || 1;
  const rand = () => {
    // xorshift32: deterministic noise from the seed
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
  const jitter = (v: number) => Math.round(v * (0.5 + rand()));
  const out: RunFigures[] = [];
  for (let i = 0; i <= s.length; i++) {
    const changed = jitter(s.level.changed);
    const added = Math.floor(changed / 3);
    const deleted = Math.floor(changed / 5);
    const bytesNew = jitter(s.level.bytesNew);
    const share = Math.min(1, Math.max(0, s.level.share + (rand() - 0.5) * 0.3));
    out.push({
      at: new Date(Date.UTC(2026, 0, 1 + i)).toISOString(),
      kind: i % 7 === 6 ? "full" : "incremental",
      files: jitter(s.level.files),
      added,
      modified: changed - added - deleted,
      deleted,
      bytesNew,
      bytesNewIncompressible: s.measured ? Math.round(bytesNew * share) : null,
      protectedBytes: jitter(s.level.bytesNew * 100),
    });
  }
  return out;
}

Deno.test("property: a steady series never flags", () => {
  fc.assert(
    fc.property(steadyArb, (s) => {
      const series = steadySeries(s);
      for (let i = 0; i < series.length; i++) {
        const v = assessRun(series.slice(0, i), series[i]);
        assert.equal(v.flagged, false, `run ${i} of a steady series was flagged: ${v.reasons.join("; ")}`);
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("property: mass encryption after a steady series of low churn always flags", () => {
  fc.assert(
    fc.property(steadyArb, fc.double({ min: 0.3, max: 1, noNaN: true }), (s, hit) => {
      // Ordinary churn is at most 0.5 % of the files a day; the attack rewrites a share `hit` of them.
      const level = { ...s.level, files: Math.max(s.level.files, 2_000) };
      level.changed = Math.floor(level.files * 0.005 * (level.changed / 50_000));
      const series = steadySeries({ ...s, level, length: Math.max(s.length, ANOMALY_RULE.minHistory) });
      const history = series.slice(0, -1);
      const encrypted = Math.round(level.files * hit);
      const v = assessRun(history, {
        ...series.at(-1)!,
        kind: "incremental",
        added: 0,
        modified: encrypted,
        deleted: 0,
      });
      assert.ok(v.flagged, `not flagged: ${JSON.stringify(v.checks)}`);
      assert.ok(v.checks.find((c) => c.signal === "changed_files")?.fired);
    }),
    { numRuns: 300 },
  );
});

Deno.test("no verdict before minHistory accepted backups (learning)", () => {
  const history = Array.from({ length: ANOMALY_RULE.minHistory - 1 }, () => figures());
  const v = assessRun(history, figures({ modified: 1_000_000 }));
  assert.equal(v.state, "learning");
  assert.equal(v.flagged, false);
  assert.deepEqual(v.checks, []);
  const w = assessRun([...history, figures()], figures({ modified: 1_000_000 }));
  assert.equal(w.state, "flagged");
});

Deno.test("changed files: flags past the threshold, with the figures in the reason", () => {
  const history = Array.from({ length: 30 }, (_, i) => figures({ modified: 18 + (i % 5) }));
  const ok = assessRun(history, figures({ modified: 60 }));
  assert.equal(ok.flagged, false, ok.reasons.join());
  const v = assessRun(history, figures({ added: 0, modified: 8_000, deleted: 0 }));
  assert.equal(v.flagged, true);
  assert.equal(v.state, "flagged");
  const check = v.checks.find((c) => c.signal === "changed_files")!;
  assert.ok(check.fired);
  assert.equal(check.value, 8_000);
  assert.equal(check.median, 27);
  // max(M + 20·1.4826·MAD, 30·M, 5 % of 10,000 files, 10) = max(27 + 20·1.4826·1, 810, 500, 10) = 810
  assert.equal(check.threshold, 810);
  assert.match(
    v.reasons[0],
    /^8,000 files changed \(0 added, 8,000 modified, 0 deleted\) against a median of 27/,
  );
});

Deno.test("quiet host: the floors keep a handful of changes from flagging", () => {
  const history = Array.from({ length: 30 }, () => figures({ files: 40, added: 0, modified: 0, deleted: 0 }));
  assert.equal(assessRun(history, figures({ files: 40, added: 3, modified: 5, deleted: 1 })).flagged, false);
  assert.equal(assessRun(history, figures({ files: 40, added: 0, modified: 11, deleted: 0 })).flagged, true);
});

Deno.test("new bytes: judged for incrementals against incrementals", () => {
  const history = Array.from(
    { length: 10 },
    () => figures({ bytesNew: 100 * MiB, bytesNewIncompressible: 0 }),
  );
  const big = figures({ bytesNew: 10_000 * MiB, bytesNewIncompressible: 0 });
  const v = assessRun(history, big);
  assert.ok(v.checks.find((c) => c.signal === "bytes_new")?.fired, JSON.stringify(v.checks));
  // A full may store everything anew (deduplication off): its new bytes are not judged.
  const full = assessRun(history, { ...big, kind: "full" });
  assert.equal(full.flagged, false);
  assert.equal(full.checks.some((c) => c.signal === "bytes_new"), false);
});

Deno.test("incompressible share: a jump with enough bytes flags; a small one or an incompressible host does not", () => {
  const history = Array.from(
    { length: 10 },
    () => figures({ bytesNew: 40 * MiB, bytesNewIncompressible: 4 * MiB }),
  );
  const encrypted = figures({ bytesNew: 60 * MiB, bytesNewIncompressible: 58 * MiB });
  const v = assessRun(history, encrypted);
  const check = v.checks.find((c) => c.signal === "incompressible_share")!;
  assert.ok(check.fired, JSON.stringify(v.checks));
  assert.ok(close(check.threshold, 0.6));
  assert.match(check.text, /97 % of the new data .* did not compress, against a median of 10 %/);
  // The same share over too few bytes (one photo): below the incompressible bytes threshold.
  assert.equal(
    assessRun(history, figures({ bytesNew: 1 * MiB, bytesNewIncompressible: 1 * MiB })).flagged,
    false,
  );
  // A media host: its new data rarely compresses, so the share can never flag.
  const media = Array.from(
    { length: 10 },
    () => figures({ bytesNew: 40 * MiB, bytesNewIncompressible: 36 * MiB }),
  );
  const m = assessRun(media, encrypted);
  assert.equal(m.flagged, false);
  assert.ok(shareThreshold([0.9]) > 1);
  assert.match(m.checks.find((c) => c.signal === "incompressible_share")!.text, /threshold none/);
});

Deno.test("compression not measured: the share is not judged, the volumes still are", () => {
  const history = Array.from({ length: 10 }, () => figures({ bytesNewIncompressible: null }));
  const v = assessRun(history, figures({ bytesNewIncompressible: null, modified: 9_000 }));
  assert.equal(v.figures.incompressibleShare, null);
  assert.equal(v.checks.some((c) => c.signal === "incompressible_share"), false);
  assert.equal(v.flagged, true);
});

Deno.test("only the last window of the history counts", () => {
  const old = Array.from({ length: 30 }, () => figures({ modified: 100_000 }));
  const recent = Array.from({ length: 30 }, () => figures({ modified: 20 }));
  assert.equal(assessRun([...old, ...recent], figures({ modified: 5_000 })).flagged, true);
  assert.equal(assessRun([...recent, ...old], figures({ modified: 5_000 })).flagged, false);
});
