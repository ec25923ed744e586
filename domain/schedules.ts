/** zod schemas for cron fields, built on the pure rules of cron_rules.ts. */
import { z } from "zod";
import { compileCron } from "./cron_rules.ts";

export { compileCron, describeCron, nextRuns } from "./cron_rules.ts";
export { deriveRpoHours, longestGapMs, RPO_GRACE_HOURS } from "./cron_gaps.ts";

/** A required 5-field cron expression. */
export function CronExpression() {
  return z.string({ error: "is required" }).trim().max(100, "must be at most 100 characters").superRefine(
    (v, ctx) => {
      if (!v) {
        ctx.addIssue({ code: "custom", message: "is required, e.g. 0 2 * * 0 (Sunday 02:00)" });
        return;
      }
      const r = compileCron(v);
      if (!r.ok) ctx.addIssue({ code: "custom", message: r.error });
    },
  );
}

/** An optional cron expression: "" or null means none. */
export function OptionalCronExpression() {
  return z.string().trim().max(100, "must be at most 100 characters").nullable().default(null)
    .superRefine((v, ctx) => {
      if (!v) return;
      const r = compileCron(v);
      if (!r.ok) ctx.addIssue({ code: "custom", message: r.error });
    })
    .transform((v) => v || null);
}
