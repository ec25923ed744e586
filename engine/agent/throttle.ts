/**
 * The policy's bandwidth cap (`maxTransferMbps`, megabytes — 10^6 bytes — per second of data read) and its
 * throttle schedule (a 5-field cron expression: the cap applies during the minutes it matches, in the policy's
 * time zone; no schedule means always).
 */
import { Cron } from "croner";
import { createThrottle, type Throttle } from "../repo/throttle.ts";

/** The throttle settings of a backup payload. */
export interface ThrottleSettings {
  maxTransferMbps?: number | null;
  schedule?: string | null;
  timeZone?: string | null;
}

/** A throttle that limits reads to the cap while the schedule matches; a description for the result. */
export function scheduledThrottle(
  settings: ThrottleSettings | null | undefined,
  now: () => Date = () => new Date(),
): { throttle: Throttle; describe: string } {
  const mbps = settings?.maxTransferMbps;
  if (!mbps || mbps <= 0) return { throttle: createThrottle(null), describe: "none" };
  const inner = createThrottle(mbps * 1_000_000);
  const schedule = settings?.schedule?.trim();
  if (!schedule) return { throttle: inner, describe: `${mbps} MBps` };
  const timezone = settings?.timeZone || "UTC";
  let cron: Cron;
  try {
    cron = new Cron(schedule, { timezone, paused: true });
  } catch (e) {
    // A schedule this agent cannot read: the cap applies always (the safe side) and the result says so.
    return {
      throttle: inner,
      describe: `${mbps} MBps always (the schedule "${schedule}" is not readable: ${(e as Error).message})`,
    };
  }
  let minute = NaN;
  let active = false;
  return {
    describe: `${mbps} MBps during "${schedule}" (${timezone})`,
    throttle: {
      take(bytes: number) {
        const t = now();
        const m = Math.floor(t.getTime() / 60_000);
        if (m !== minute) {
          minute = m;
          active = cron.match(new Date(m * 60_000));
        }
        return active ? inner.take(bytes) : Promise.resolve();
      },
    },
  };
}
