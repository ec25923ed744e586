/**
 * Minute job: finishes interrupted platform deletions and syncs each third-party platform whose sync
 * interval has elapsed (platform_sync.ts `syncDuePlatforms`). Each platform's outcome is kept on it.
 */
import { syncDuePlatforms } from "../domain/platform_sync.ts";

export async function syncPlatforms(kv: Deno.Kv, now: Date, options: { masterKey: Uint8Array }) {
  return await syncDuePlatforms(kv, now, { masterKey: options.masterKey });
}
