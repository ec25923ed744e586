/** Storage capacity rules: usage, EWMA growth, time-to-full and health boundaries. */
import assert from "node:assert/strict";
import {
  type CapacitySample,
  estimateFullAt,
  evaluateCapacity,
  FULL_SOON_MS,
  GROWTH_ALPHA,
  MIN_RATE_INTERVAL_MS,
  nextCapacityState,
  nextGrowthRate,
  usagePercent,
} from "../../domain/capacity.ts";

const T0 = Date.parse("2026-11-22T10:00:00Z");
const DAY = 86_400_000;
const HOUR = 3600_000;
const THRESHOLDS = { alertThreshold: 85, criticalThreshold: 95 };

function sample(atMs: number, usedBytes: number, totalBytes = 1_000_000): CapacitySample {
  return { at: new Date(atMs).toISOString(), totalBytes, usedBytes, freeBytes: totalBytes - usedBytes };
}

Deno.test("usagePercent() is used/total in percent rounded to 0.01, and 0 for an empty total", () => {
  assert.equal(usagePercent({ totalBytes: 1000, usedBytes: 0 }), 0);
  assert.equal(usagePercent({ totalBytes: 1000, usedBytes: 1000 }), 100);
  assert.equal(usagePercent({ totalBytes: 1000, usedBytes: 333 }), 33.3);
  assert.equal(usagePercent({ totalBytes: 3, usedBytes: 2 }), 66.67);
  assert.equal(usagePercent({ totalBytes: 3, usedBytes: 1 }), 33.33);
  assert.equal(usagePercent({ totalBytes: 10_000, usedBytes: 8499 }), 84.99);
  assert.equal(usagePercent({ totalBytes: 0, usedBytes: 0 }), 0);
  assert.equal(usagePercent({ totalBytes: 0, usedBytes: 5 }), 0);
});

Deno.test("nextGrowthRate() is null for the first sample", () => {
  assert.equal(nextGrowthRate(null, sample(T0, 500_000)), null);
});

Deno.test("nextGrowthRate() is the instantaneous rate (bytes/day) for the second sample", () => {
  const first = { at: new Date(T0).toISOString(), usedBytes: 500_000, growthBytesPerDay: null };
  // +1000 bytes in one hour = 24 000 bytes/day.
  assert.equal(nextGrowthRate(first, sample(T0 + HOUR, 501_000)), 24_000);
  // Shrinking gives a negative rate.
  assert.equal(nextGrowthRate(first, sample(T0 + DAY, 400_000)), -100_000);
  // No change: 0.
  assert.equal(nextGrowthRate(first, sample(T0 + DAY, 500_000)), 0);
});

Deno.test("nextGrowthRate() then smooths with the EWMA new = α·instant + (1−α)·previous", () => {
  assert.equal(GROWTH_ALPHA, 0.05);
  const previous = { at: new Date(T0).toISOString(), usedBytes: 500_000, growthBytesPerDay: 24_000 };
  // Instant: +2000 bytes in one hour = 48 000 bytes/day → 0.05·48 000 + 0.95·24 000 = 25 200.
  const next = nextGrowthRate(previous, sample(T0 + HOUR, 502_000));
  assert.ok(next !== null && Math.abs(next - 25_200) < 1e-6, `got ${next}`);
  assert.equal(next, GROWTH_ALPHA * 48_000 + (1 - GROWTH_ALPHA) * 24_000);
  // A sudden drop pulls the average down by α of the (negative) instant rate.
  // Instant: −24 000 bytes in one day → 0.05·(−24 000) + 0.95·24 000 = 21 600.
  const drop = nextGrowthRate(previous, sample(T0 + DAY, 476_000));
  assert.ok(drop !== null && Math.abs(drop - 21_600) < 1e-6, `got ${drop}`);
  // A custom alpha is honoured.
  assert.equal(nextGrowthRate(previous, sample(T0 + HOUR, 502_000), 0.5), 36_000);
});

Deno.test("nextGrowthRate() keeps the previous rate for samples closer than 30 s", () => {
  assert.equal(MIN_RATE_INTERVAL_MS, 30_000);
  const previous = { at: new Date(T0).toISOString(), usedBytes: 500_000, growthBytesPerDay: 24_000 };
  assert.equal(nextGrowthRate(previous, sample(T0 + 29_999, 900_000)), 24_000);
  assert.equal(nextGrowthRate(previous, sample(T0, 900_000)), 24_000);
  // Still null when there is no previous rate yet.
  assert.equal(nextGrowthRate({ ...previous, growthBytesPerDay: null }, sample(T0 + 10_000, 900_000)), null);
  // Exactly 30 s is used: +1 byte in 30 s = 2880 bytes/day instant.
  const at30 = nextGrowthRate({ ...previous, growthBytesPerDay: null }, sample(T0 + 30_000, 500_001));
  assert.equal(at30, 2880);
});

Deno.test("estimateFullAt() is now + free / growth days, null when not growing", () => {
  const s = sample(T0, 400_000); // 600 000 free
  assert.equal(estimateFullAt(s, 100_000), new Date(T0 + 6 * DAY).toISOString());
  assert.equal(estimateFullAt(s, 600_000), new Date(T0 + DAY).toISOString());
  assert.equal(estimateFullAt(s, 1_200_000), new Date(T0 + DAY / 2).toISOString());
  assert.equal(estimateFullAt(s, null), null);
  assert.equal(estimateFullAt(s, 0), null);
  assert.equal(estimateFullAt(s, -5_000), null);
  // Already full: the full date is now.
  assert.equal(estimateFullAt(sample(T0, 1_000_000), 10), new Date(T0).toISOString());
  // Very slow growth is capped at 100 years.
  assert.equal(estimateFullAt(s, 1e-9), new Date(T0 + 100 * 365 * DAY).toISOString());
});

Deno.test("evaluateCapacity() at exactly the alert threshold is warning, just below is healthy", () => {
  const total = 10_000;
  assert.equal(evaluateCapacity(sample(T0, 8499, total), null, THRESHOLDS).status, "healthy");
  const atAlert = evaluateCapacity(sample(T0, 8500, total), null, THRESHOLDS);
  assert.equal(atAlert.status, "warning");
  assert.match(atAlert.reason, /85% is at or above the alert threshold 85%/);
});

Deno.test("evaluateCapacity() at exactly the critical threshold is critical, just below is warning", () => {
  const total = 10_000;
  assert.equal(evaluateCapacity(sample(T0, 9499, total), null, THRESHOLDS).status, "warning");
  const atCritical = evaluateCapacity(sample(T0, 9500, total), null, THRESHOLDS);
  assert.equal(atCritical.status, "critical");
  assert.match(atCritical.reason, /critical threshold 95%/);
  assert.equal(evaluateCapacity(sample(T0, total, total), null, THRESHOLDS).status, "critical");
  // A near full date leaves the status to the thresholds and sets the early warning beside it.
  const soon = evaluateCapacity(sample(T0, 9600, total), new Date(T0 + HOUR).toISOString(), THRESHOLDS);
  assert.deepEqual([soon.status, soon.fullSoon], ["critical", true]);
});

Deno.test("evaluateCapacity() follows the guide's table: below the alert threshold is healthy, even when full within 14 days", () => {
  assert.equal(FULL_SOON_MS, 14 * DAY);
  const s = sample(T0, 200_000); // 20 %
  // The early warning is a flag of its own; the status stays healthy.
  const soon = evaluateCapacity(s, new Date(T0 + 14 * DAY - 1).toISOString(), THRESHOLDS);
  assert.deepEqual(soon, { status: "healthy", reason: "Usage 20%", fullSoon: true });
  assert.deepEqual(evaluateCapacity(s, new Date(T0 + DAY).toISOString(), THRESHOLDS).fullSoon, true);
  // Exactly 14 days, or later, or not growing: no early warning.
  assert.equal(evaluateCapacity(s, new Date(T0 + 14 * DAY).toISOString(), THRESHOLDS).fullSoon, false);
  assert.equal(evaluateCapacity(s, new Date(T0 + 90 * DAY).toISOString(), THRESHOLDS).fullSoon, false);
  assert.deepEqual(evaluateCapacity(s, null, THRESHOLDS), {
    status: "healthy",
    reason: "Usage 20%",
    fullSoon: false,
  });
  // Beside warning and critical too, without changing them.
  const total = 10_000;
  const soonAt = new Date(T0 + HOUR).toISOString();
  assert.deepEqual(
    [
      evaluateCapacity(sample(T0, 8499, total), soonAt, THRESHOLDS).status,
      evaluateCapacity(sample(T0, 8500, total), soonAt, THRESHOLDS).status,
    ],
    ["healthy", "warning"],
  );
  assert.equal(evaluateCapacity(sample(T0, 9000, total), soonAt, THRESHOLDS).fullSoon, true);
});

Deno.test("nextCapacityState() chains growth, full date and status from a previous state", () => {
  const first = nextCapacityState(null, sample(T0, 500_000), THRESHOLDS);
  assert.equal(first.usagePercent, 50);
  assert.equal(first.growthBytesPerDay, null);
  assert.equal(first.estimatedFullAt, null);
  assert.equal(first.status, "healthy");
  assert.equal(first.fullSoon, false);
  // +50 000 bytes in a day: 450 000 free at 50 000/day → full in 9 days: healthy at 55 %, with the early warning.
  const second = nextCapacityState(first, sample(T0 + DAY, 550_000), THRESHOLDS);
  assert.equal(second.growthBytesPerDay, 50_000);
  assert.equal(second.estimatedFullAt, new Date(T0 + 10 * DAY).toISOString());
  assert.equal(second.status, "healthy");
  assert.equal(second.statusReason, "Usage 55%");
  assert.equal(second.fullSoon, true);
  assert.equal(second.usagePercent, 55);
  assert.equal(second.freeBytes, 450_000);
});
