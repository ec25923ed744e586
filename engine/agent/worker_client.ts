/**
 * Starts the worker process (worker.ts) for one job — under `nice`/`ionice` when asked (priority.ts) — hands
 * it its request and each renewed data token over stdin, relays its progress to the job's handle, and
 * returns its outcome. Cancelling the job (or losing its lease) stops the worker: SIGTERM, then SIGKILL
 * 10 s later. A backup stopped that way writes no snapshot (engine/repo writes it last).
 */
import { fileURLToPath as fromFileUrl } from "node:url";
import { AgentJobError } from "./failure.ts";
import type { JobHandle, Logger } from "./job_handle.ts";
import { readLines } from "./lines.ts";
import {
  WORKER_LINE_PREFIX,
  type WorkerMessage,
  type WorkerOutcome,
  type WorkerRequest,
} from "./worker_protocol.ts";

const WORKER = new URL("./worker.ts", import.meta.url);
const CONFIG = new URL("../../deno.json", import.meta.url);

/** The command line of the worker (after the priority prefix). */
export function workerCommand(): string[] {
  if (WORKER.protocol !== "file:") {
    throw new Error("The agent must run from its source files (the worker is started from them)");
  }
  return [
    Deno.execPath(),
    "run",
    "--allow-all",
    "--no-prompt",
    `--config=${fromFileUrl(CONFIG)}`,
    fromFileUrl(WORKER),
  ];
}

/** Runs `request` in a worker; throws `AgentJobError` with the worker's failure, or why it stopped. */
export async function runInWorker(
  handle: JobHandle,
  request: WorkerRequest,
  options: {
    prefix?: string[];
    log: Logger;
    onProgress?: (m: Extract<WorkerMessage, { type: "progress" }>) => void;
  },
): Promise<WorkerOutcome> {
  const token = handle.token;
  if (!token) throw new AgentJobError("AUTH", `Job ${handle.job.id} came without a data token`, true);
  const [cmd, ...args] = [...(options.prefix ?? []), ...workerCommand()];
  const child = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  const encoder = new TextEncoder();
  let writes = Promise.resolve();
  const write = (m: unknown) => {
    writes = writes.then(() => writer.write(encoder.encode(JSON.stringify(m) + "\n"))).catch(() => {});
    return writes;
  };
  await write({ type: "start", request, token });
  const stopTokens = handle.onToken((t) => void write({ type: "token", token: t }));
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const onAbort = () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already ended
    }
    killTimer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // ended
      }
    }, 10_000);
  };
  if (handle.signal.aborted) onAbort();
  else handle.signal.addEventListener("abort", onAbort, { once: true });
  let outcome: WorkerOutcome | null = null;
  let failure: Extract<WorkerMessage, { type: "error" }>["failure"] | null = null;
  const stderrTail: string[] = [];
  const job = handle.job.id;
  const readOut = (async () => {
    for await (const line of readLines(child.stdout)) {
      if (!line.startsWith(WORKER_LINE_PREFIX)) {
        if (line.trim()) options.log("info", `job ${job} worker: ${line}`);
        continue;
      }
      let m: WorkerMessage;
      try {
        m = JSON.parse(line.slice(WORKER_LINE_PREFIX.length));
      } catch {
        continue;
      }
      if (m.type === "progress") options.onProgress?.(m);
      else if (m.type === "result") outcome = m.outcome;
      else if (m.type === "error") failure = m.failure;
    }
  })();
  const readErr = (async () => {
    for await (const line of readLines(child.stderr)) {
      if (!line.trim()) continue;
      stderrTail.push(line);
      if (stderrTail.length > 20) stderrTail.shift();
      options.log("warn", `job ${job} worker: ${line}`);
    }
  })();
  const status = await child.status;
  await Promise.allSettled([readOut, readErr]);
  stopTokens();
  handle.signal.removeEventListener("abort", onAbort);
  clearTimeout(killTimer);
  await writer.close().catch(() => {});
  if (outcome) return outcome;
  if (handle.abortReason === "cancelled") {
    throw new AgentJobError("CANCELLED", "The job was cancelled by an operator");
  }
  if (handle.abortReason === "lost") {
    throw new AgentJobError(
      "LEASE_EXPIRED",
      "The job's lease was lost (it ended or was given to another attempt)",
      true,
    );
  }
  if (handle.abortReason === "stopping") {
    throw new AgentJobError("AGENT_STOPPED", "The agent was stopped while the job ran", true);
  }
  if (failure) {
    const f = failure as { reason: string; message: string; retryable: boolean };
    throw new AgentJobError(f.reason, f.message, f.retryable);
  }
  throw new AgentJobError(
    "AGENT_ERROR",
    `The agent's worker process ended (${
      status.signal ? `signal ${status.signal}` : `exit ${status.code}`
    }) ` +
      `without a result${stderrTail.length ? `: ${stderrTail.slice(-5).join(" | ")}` : ""}`,
    true,
  );
}
