/**
 * Start-up data fixes: a fix that backfills an index runs once. A marker written when it completes makes
 * later starts skip it (unless `force`: after a results-DB restore); a crash part-way leaves no marker, so
 * the next start finishes it (each fix is idempotent).
 */

/** What a data fix did: how many records it indexed, or that its marker said it had run already. */
export type DataFixResult = { indexed: number; skipped: boolean };

/**
 * Runs `fix` (which returns how many records it indexed) unless the marker at `markerKey` is set, then sets
 * the marker with the time and count.
 */
export async function runDataFix(
  kv: Deno.Kv,
  markerKey: Deno.KvKey,
  now: Date,
  options: { force?: boolean },
  fix: () => Promise<number>,
): Promise<DataFixResult> {
  if (!options.force && (await kv.get(markerKey)).value) return { indexed: 0, skipped: true };
  const indexed = await fix();
  await kv.set(markerKey, { at: now.toISOString(), indexed });
  return { indexed, skipped: false };
}
