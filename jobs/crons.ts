/**
 * Registers the Deno.cron jobs. Deno.cron fires in every process that registers it, so each tick
 * first claims its time slot with an atomic check; only the winner works. Each tick is a span (Deno's
 * built-in OpenTelemetry honours `@opentelemetry/api`; without OTEL_DENO=true it costs nothing), and a
 * `TickGate` lets a graceful shutdown stop new ticks and wait for the running one.
 */
import { SpanStatusCode, trace } from "@opentelemetry/api";
import { claimCronSlot } from "../domain/cron_slots.ts";
import type { Logger } from "../domain/log.ts";
import { applyRetention } from "./apply_retention.ts";
import { autoRetry } from "./auto_retry.ts";
import { deliverNotifications } from "./deliver_notifications.ts";
import { dispatchDrills } from "./dispatch_drills.ts";
import { dispatchSchedules } from "./dispatch_schedules.ts";
import { expireApprovals } from "./expire_approvals.ts";
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
export function claimSlot(kv: Deno.Kv, name: string, slot: string): Promise<boolean> {
  return claimCronSlot(kv, name, slot);
}

/**
 * The ticks of one process: `stop` refuses new ticks (before they claim a slot, so another instance
 * takes the minute) and waits, up to a deadline, for the running ones.
 */
export class TickGate {
  #stopped = false;
  #running = new Map<Promise<void>, string>();

  get stopped(): boolean {
    return this.#stopped;
  }

  /** The jobs of the ticks running now. */
  get running(): string[] {
    return [...this.#running.values()];
  }

  /** Runs `work` as the tick of `name` unless stopped. */
  run(name: string, work: () => Promise<void>): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    const tick: Promise<void> = work().finally(() => this.#running.delete(tick));
    this.#running.set(tick, name);
    return tick;
  }

  /** Stops new ticks and waits for the running ones, at most `timeoutMs`. Returns the jobs still running then. */
  async stop(timeoutMs: number): Promise<string[]> {
    this.#stopped = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<void>((resolve) => timer = setTimeout(resolve, timeoutMs));
    await Promise.race([Promise.allSettled([...this.#running.keys()]), deadline]);
    clearTimeout(timer);
    return this.running;
  }
}

/** What a tick reports when it ran (metrics): its job, duration, outcome and the job's own summary. */
export type TickObserver = (job: string, seconds: number, outcome: "ok" | "failed", result: unknown) => void;

export interface TickOptions {
  gate?: TickGate;
  onTick?: TickObserver;
}

const tracer = trace.getTracer("cadres-backup");

/**
 * Runs `job` for the current minute slot if this instance claims it, in a span `cron <name>`, logging
 * one JSON line (and "job started" at debug level). Nothing when `options.gate` is stopped.
 */
export function runClaimed(
  kv: Deno.Kv,
  logger: Logger,
  name: string,
  now: Date,
  job: (now: Date) => Promise<unknown>,
  options: TickOptions = {},
): Promise<void> {
  const slot = now.toISOString().slice(0, 16);
  const work = () =>
    tracer.startActiveSpan(`cron ${name}`, {
      attributes: { "cadres.cron.job": name, "cadres.cron.slot": slot },
    }, async (span) => {
      try {
        const claimed = await claimSlot(kv, name, slot);
        span.setAttribute("cadres.cron.claimed", claimed);
        if (!claimed) return;
        logger.log("debug", "job started", { job: name, slot });
        const started = performance.now();
        try {
          const result = await job(now);
          const seconds = (performance.now() - started) / 1000;
          options.onTick?.(name, seconds, "ok", result);
          logger.log("info", "job", {
            job: name,
            slot,
            status: "ok",
            durationMs: Math.round(seconds * 1000),
            result,
          });
        } catch (error) {
          options.onTick?.(name, (performance.now() - started) / 1000, "failed", null);
          span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
          logger.log("error", "job", { job: name, slot, status: "failed", error: String(error) });
        }
      } catch (error) {
        // The slot claim itself failed (KV unreachable): nobody ran; the next tick tries again.
        span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
        logger.log("error", "job", { job: name, slot, status: "failed", error: String(error) });
      } finally {
        span.end();
      }
    });
  return options.gate ? options.gate.run(name, work) : work();
}

/** Registers every cron of the app. */
export function registerCrons(
  kv: Deno.Kv,
  logger: Logger,
  options: { masterKey: Uint8Array; dataDir: string; baseUrl?: string } & TickOptions,
): void {
  const { gate, onTick, ...jobOptions } = options;
  const cron = (title: string, schedule: string, name: string, job: (now: Date) => Promise<unknown>) =>
    Deno.cron(title, schedule, () => runClaimed(kv, logger, name, new Date(), job, { gate, onTick }));
  cron(
    "Run scheduled self-backups",
    "* * * * *",
    "self_backup",
    (now) => runSelfBackups(kv, { now, ...jobOptions }),
  );
  cron("Sweep engine heartbeats", "* * * * *", "sweep_heartbeats", (now) => sweepHeartbeats(kv, now));
  cron("Sweep host heartbeats", "* * * * *", "sweep_hosts", (now) => sweepHosts(kv, now));
  cron("Apply retention", "17 * * * *", "apply_retention", (now) => applyRetention(kv, now));
  cron("Resume job retries", "* * * * *", "resume_job_retries", (now) => resumeJobRetries(kv, now));
  cron("Catch up runs whose job ended", "* * * * *", "sweep_open_runs", (now) => sweepOpenRuns(kv, now));
  cron("Sweep RPO breaches", "* * * * *", "sweep_rpo", (now) => sweepRpo(kv, now));
  cron("Retry failed runs automatically", "* * * * *", "auto_retry", (now) => autoRetry(kv, now));
  cron(
    "Dispatch due policy schedules",
    "* * * * *",
    "dispatch_schedules",
    (now) => dispatchSchedules(kv, now),
  );
  cron("Dispatch due restore drills", "* * * * *", "dispatch_drills", (now) => dispatchDrills(kv, now));
  cron(
    "Sync third-party platforms",
    "* * * * *",
    "sync_platforms",
    (now) => syncPlatforms(kv, now, { masterKey: options.masterKey }),
  );
  cron("Expire job leases", "* * * * *", "expire_leases", (now) => expireLeases(kv, now));
  cron("Expire four-eyes requests", "* * * * *", "expire_approvals", (now) => expireApprovals(kv, now));
  cron(
    "Resume interrupted engine deletions",
    "* * * * *",
    "resume_deletions",
    (now) => resumeDeletions(kv, now, { logger }),
  );
  cron(
    "Send alert notifications",
    "* * * * *",
    "deliver_notifications",
    (now) => deliverNotifications(kv, now, { masterKey: options.masterKey, baseUrl: options.baseUrl }),
  );
  cron(
    "Purge expired sessions and login counters",
    "*/10 * * * *",
    "purge_expired",
    (now) => purgeExpired(kv, now),
  );
}
