/** Minute job: runs each database's self-backup in its scheduled hour, once a day (claimed atomically). */
import { runScheduledBackups } from "../domain/self_backup_runs.ts";

export async function runSelfBackups(
  kv: Deno.Kv,
  options: { now: Date; masterKey: Uint8Array; dataDir: string },
) {
  const triggers = await runScheduledBackups(kv, { ...options, clock: () => new Date() });
  return { ran: triggers.map((t) => `${t.database}:${t.status}`) };
}
