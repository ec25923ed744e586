/** Storage capacity rules: usage, EWMA growth, time-to-full, health status and the early warning. Pure functions. */

/**
 * EWMA smoothing constant for the growth rate, per sample: new = α·instant + (1−α)·previous.
 * With one sample a minute, α = 0.05 gives a time constant of about 20 samples (20 minutes of
 * reports), smoothing single noisy reports while following a real change in growth within the hour.
 */
export const GROWTH_ALPHA = 0.05;

/** Samples closer together than this are not used for the instantaneous rate (too noisy). */
export const MIN_RATE_INTERVAL_MS = 30_000;

/**
 * A full date closer than this is the early warning: a flag and an alert of its own (`storage_full_soon`),
 * whatever the status. It never changes the status, which follows the thresholds alone (the guide's table).
 */
export const FULL_SOON_MS = 14 * 86_400_000;

export type CapacityStatus = "healthy" | "warning" | "critical";

export interface CapacitySample {
  at: string;
  totalBytes: number;
  usedBytes: number;
  freeBytes: number;
}

export interface CapacityState extends CapacitySample {
  usagePercent: number;
  /** Smoothed growth of used bytes per day (negative when shrinking); null until two samples. */
  growthBytesPerDay: number | null;
  /** When used bytes reach total at the current growth; null when not growing. */
  estimatedFullAt: string | null;
  /** From the thresholds alone: < alert → healthy, ≥ alert → warning, ≥ critical → critical. */
  status: CapacityStatus;
  /** Why the status is what it is, for operators. */
  statusReason: string;
  /**
   * The early warning: at the current growth the target is full less than 14 days after this sample.
   * Absent on states stored before it existed (read as false).
   */
  fullSoon?: boolean;
}

/** Usage in percent of total (0 when total is 0), rounded to 0.01. */
export function usagePercent(sample: Pick<CapacitySample, "totalBytes" | "usedBytes">): number {
  if (sample.totalBytes <= 0) return 0;
  return Math.round((sample.usedBytes / sample.totalBytes) * 10_000) / 100;
}

/** One EWMA step of the growth rate (bytes/day) from the previous state to a new sample. */
export function nextGrowthRate(
  previous: Pick<CapacityState, "at" | "usedBytes" | "growthBytesPerDay"> | null,
  sample: CapacitySample,
  alpha = GROWTH_ALPHA,
): number | null {
  if (!previous) return null;
  const dt = Date.parse(sample.at) - Date.parse(previous.at);
  if (dt < MIN_RATE_INTERVAL_MS) return previous.growthBytesPerDay;
  const instant = ((sample.usedBytes - previous.usedBytes) / dt) * 86_400_000;
  if (previous.growthBytesPerDay === null) return instant;
  return alpha * instant + (1 - alpha) * previous.growthBytesPerDay;
}

/** When free space runs out at `growthBytesPerDay`, or null when not growing. */
export function estimateFullAt(sample: CapacitySample, growthBytesPerDay: number | null): string | null {
  if (growthBytesPerDay === null || growthBytesPerDay <= 0) return null;
  const free = Math.max(0, sample.totalBytes - sample.usedBytes);
  const ms = (free / growthBytesPerDay) * 86_400_000;
  return new Date(Date.parse(sample.at) + Math.min(ms, 100 * 365 * 86_400_000)).toISOString();
}

/** Whether a full date is less than 14 days after the sample: the early warning. */
function isFullSoon(sample: Pick<CapacitySample, "at">, estimatedFullAt: string | null): boolean {
  return estimatedFullAt !== null && Date.parse(estimatedFullAt) - Date.parse(sample.at) < FULL_SOON_MS;
}

/**
 * Health from the thresholds (percent), the guide's table: ≥ critical → critical; ≥ alert → warning;
 * otherwise healthy. The early warning (a full date less than 14 days away) is returned beside it as
 * `fullSoon` and never changes the status: a target below the alert threshold is healthy, so policies
 * paused at critical resume when it gets there even while it grows fast.
 */
export function evaluateCapacity(
  sample: CapacitySample,
  estimatedFullAt: string | null,
  thresholds: { alertThreshold: number; criticalThreshold: number },
): { status: CapacityStatus; reason: string; fullSoon: boolean } {
  const pct = usagePercent(sample);
  const fullSoon = isFullSoon(sample, estimatedFullAt);
  if (pct >= thresholds.criticalThreshold) {
    return {
      status: "critical",
      reason: `Usage ${pct}% is at or above the critical threshold ${thresholds.criticalThreshold}%`,
      fullSoon,
    };
  }
  if (pct >= thresholds.alertThreshold) {
    return {
      status: "warning",
      reason: `Usage ${pct}% is at or above the alert threshold ${thresholds.alertThreshold}%`,
      fullSoon,
    };
  }
  return { status: "healthy", reason: `Usage ${pct}%`, fullSoon };
}

/** The next capacity state from the previous one and a new report. */
export function nextCapacityState(
  previous: CapacityState | null,
  sample: CapacitySample,
  thresholds: { alertThreshold: number; criticalThreshold: number },
): CapacityState {
  const growthBytesPerDay = nextGrowthRate(previous, sample);
  const estimatedFullAt = estimateFullAt(sample, growthBytesPerDay);
  const { status, reason, fullSoon } = evaluateCapacity(sample, estimatedFullAt, thresholds);
  return {
    ...sample,
    usagePercent: usagePercent(sample),
    growthBytesPerDay,
    estimatedFullAt,
    status,
    statusReason: reason,
    fullSoon,
  };
}
