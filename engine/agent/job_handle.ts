/**
 * One running job's link to the control plane: posts its progress every few seconds (which renews the
 * lease), keeps the newest data token from each reply, and aborts the job when the operator cancelled it
 * or its lease is lost (the job ended or went to another attempt).
 */
import type { ClaimedJob, ControlPlane } from "./control.ts";
import { ControlPlaneError } from "./failure.ts";

export type Logger = (level: "info" | "warn" | "error", message: string) => void;

export class JobHandle {
  #token: string | null;
  #tokenListeners = new Set<(token: string) => void>();
  readonly #abort = new AbortController();
  /** Why the job was aborted: "cancelled" (the operator) or "lost" (the lease). */
  abortReason: "cancelled" | "lost" | "stopping" | null = null;
  #latest = { percent: 0, bytesTransferred: 0, message: "starting" };
  #timer: ReturnType<typeof setInterval> | undefined;
  #posting: Promise<void> | null = null;

  constructor(
    readonly control: ControlPlane,
    readonly job: ClaimedJob,
    readonly log: Logger,
    readonly intervalMs = 3000,
  ) {
    this.#token = job.dataToken;
  }

  /** The newest data token (null when the job has none). */
  get token(): string | null {
    return this.#token;
  }

  /** Called with every renewed token. Returns a function that stops the calls. */
  onToken(listener: (token: string) => void): () => void {
    this.#tokenListeners.add(listener);
    return () => this.#tokenListeners.delete(listener);
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Sets what the next progress report says. */
  progress(percent: number, bytesTransferred: number, message: string): void {
    this.#latest = {
      percent: Math.max(0, Math.min(100, Math.round(percent * 10) / 10)),
      bytesTransferred: Math.max(0, Math.floor(bytesTransferred)),
      message: message.slice(0, 500),
    };
  }

  /** Starts the reports: one at once, then every `intervalMs`. */
  start(): void {
    this.#tick();
    this.#timer = setInterval(() => this.#tick(), this.intervalMs);
  }

  /** Posts a report now (e.g. before a long step) and waits for it. */
  async report(): Promise<void> {
    await this.#tick();
  }

  #tick(): Promise<void> {
    if (this.#posting) return this.#posting;
    this.#posting = (async () => {
      try {
        const reply = await this.control.progress(this.job.id, this.#latest);
        if (reply.dataToken && reply.dataToken !== this.#token) {
          this.#token = reply.dataToken;
          for (const l of this.#tokenListeners) l(reply.dataToken);
        }
        if (reply.cancel) this.abort("cancelled");
      } catch (e) {
        if (e instanceof ControlPlaneError && (e.status === 404 || e.status === 409)) {
          this.log("warn", `job ${this.job.id}: ${e.message}; stopping it`);
          this.abort("lost");
        } else {
          // The control plane may be restarting: the lease (5 minutes) outlives a few missed reports.
          this.log("warn", `job ${this.job.id}: progress not reported: ${(e as Error).message}`);
        }
      } finally {
        this.#posting = null;
      }
    })();
    return this.#posting;
  }

  abort(reason: "cancelled" | "lost" | "stopping"): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.#abort.abort(reason);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
