/**
 * Registers the Deno.cron jobs. Deno.cron fires in every process that registers it, so each tick
 * first claims its time slot with an atomic check; only the winner works.
 */
import type { Logger } from "../domain/log.ts";
import { applyRetention } from "./apply_retention.ts";
import { autoRetry } from "./auto_retry.ts";
import { deliverNotifications } from "./deliver_notifications.ts";
import { dispatchSchedules } from "./dispatch_schedules.ts";
import { expireLeases } from "./expire_leases.ts";
import { purgeExpired } from "./purge_expired.ts";
import { resumeDeletions } from "./resume_deletions.ts";
import { resumeJobRetries } from "./resume_job_retries.ts";
import { runSelfBackups } from "./self_backup.ts";
import { sweepHeartbeats } from "./sweep_heartbeats.ts";
import { sweepHosts } from "./sweep_hosts.ts";
import { sweepOpenRuns } from "./sweep_open_runs.ts";
import { sweepRpo } from "./sweep_rpo.ts";
import { syncPlatforms } from "./sync_platforms.ts";

/** Claims the slot `name@slot` once across all instances. Returns false when another instance has it. */
export async function claimSlot(kv: Deno.Kv, name: string, slot: string): Promise<boolean> {
  const key = ["cron_slots", name, slot];
  const res = await kv.atomic().check({ key, versionstamp: null }).set(key, true, { expireIn: 86_400_000 })
    .commit();
  return res.ok;
}

/** Runs `job` for the current minute slot if this instance claims it, logging one JSON line. */
export async function runClaimed(
  kv: Deno.Kv,
  logger: Logger,
  name: string,
  now: Date,
  job: (now: Date) => Promise<unknown>,
): Promise<void> {
  const slot = now.toISOString().slice(0, 16);
  if (!(await claimSlot(kv, name, slot))) return;
  const started = performance.now();
  try {
    const result = await job(now);
    logger.log("info", "job", {
      job: name,
      slot,
      status: "ok",
      durationMs: Math.round(performance.now() - started),
      result,
    });
  } catch (error) {
    logger.log("error", "job", { job: name, slot, status: "failed", error: String(error) });
  }
}

/** Registers every cron of the app. */
export function registerCrons(
  kv: Deno.Kv,
  logger: Logger,
  options: { masterKey: Uint8Array; dataDir: string; baseUrl?: string },
): void {
  Deno.cron(
    "Run scheduled self-backups",
    "* * * * *",
    () => runClaimed(kv, logger, "self_backup", new Date(), (now) => runSelfBackups(kv, { now, ...options })),
  );
  Deno.cron(
    "Sweep engine heartbeats",
    "* * * * *",
    () => runClaimed(kv, logger, "sweep_heartbeats", new Date(), (now) => sweepHeartbeats(kv, now)),
  );
  Deno.cron(
    "Sweep host heartbeats",
    "* * * * *",
    () => runClaimed(kv, logger, "sweep_hosts", new Date(), (now) => sweepHosts(kv, now)),
  );
  Deno.cron(
    "Apply retention",
    "17 * * * *",
    () => runClaimed(kv, logger, "apply_retention", new Date(), (now) => applyRetention(kv, now)),
  );
  Deno.cron(
    "Resume job retries",
    "* * * * *",
    () => runClaimed(kv, logger, "resume_job_retries", new Date(), (now) => resumeJobRetries(kv, now)),
  );
  Deno.cron(
    "Catch up runs whose job ended",
    "* * * * *",
    () => runClaimed(kv, logger, "sweep_open_runs", new Date(), (now) => sweepOpenRuns(kv, now)),
  );
  Deno.cron(
    "Sweep RPO breaches",
    "* * * * *",
    () => runClaimed(kv, logger, "sweep_rpo", new Date(), (now) => sweepRpo(kv, now)),
  );
  Deno.cron(
    "Retry failed runs automatically",
    "* * * * *",
    () => runClaimed(kv, logger, "auto_retry", new Date(), (now) => autoRetry(kv, now)),
  );
  Deno.cron(
    "Dispatch due policy schedules",
    "* * * * *",
    () => runClaimed(kv, logger, "dispatch_schedules", new Date(), (now) => dispatchSchedules(kv, now)),
  );
  Deno.cron(
    "Sync third-party platforms",
    "* * * * *",
    () =>
      runClaimed(
        kv,
        logger,
        "sync_platforms",
        new Date(),
        (now) => syncPlatforms(kv, now, { masterKey: options.masterKey }),
      ),
  );
  Deno.cron(
    "Expire job leases",
    "* * * * *",
    () => runClaimed(kv, logger, "expire_leases", new Date(), (now) => expireLeases(kv, now)),
  );
  Deno.cron(
    "Resume interrupted engine deletions",
    "* * * * *",
    () =>
      runClaimed(kv, logger, "resume_deletions", new Date(), (now) => resumeDeletions(kv, now, { logger })),
  );
  Deno.cron(
    "Send alert notifications",
    "* * * * *",
    () =>
      runClaimed(
        kv,
        logger,
        "deliver_notifications",
        new Date(),
        (now) => deliverNotifications(kv, now, { masterKey: options.masterKey, baseUrl: options.baseUrl }),
      ),
  );
  Deno.cron(
    "Purge expired sessions and login counters",
    "*/10 * * * *",
    () => runClaimed(kv, logger, "purge_expired", new Date(), (now) => purgeExpired(kv, now)),
  );
}
