/** A bytes-per-second limit shared by one backup's reads or one restore's writes. */

/** Waits as needed so that the bytes taken average at most `bytesPerSecond` (null: no limit). */
export interface Throttle {
  take(bytes: number): Promise<void>;
}

/** A throttle of `bytesPerSecond`; null or 0 means unlimited. Idle time does not bank a burst beyond 1 s. */
export function createThrottle(
  bytesPerSecond: number | null | undefined,
  now = () => performance.now(),
): Throttle {
  if (!bytesPerSecond || bytesPerSecond <= 0) return { take: () => Promise.resolve() };
  let start = now();
  let taken = 0;
  return {
    async take(bytes: number) {
      const t = now();
      // Forget history older than one second of budget so a pause does not allow an unbounded burst.
      if ((t - start) / 1000 * bytesPerSecond - taken > bytesPerSecond) {
        start = t - 1000;
        taken = 0;
      }
      taken += bytes;
      const due = start + (taken / bytesPerSecond) * 1000;
      if (due > t) await new Promise((r) => setTimeout(r, due - t));
    },
  };
}
