/**
 * The BES's view of its storage targets, fetched from the control plane with `POST /api/bes/v1/targets`
 * (signed; the reply carries each target's credential secret). Kept in memory only — never written to
 * the data folder or a log — and fetched again when the heartbeat's `storageTargetIds` change, when a job
 * names a target it does not know, and every `refreshMs` (a rotated credential or an edited config).
 */
import type { EngineClient, EngineIdentity } from "../protocol/client.ts";
import { type Logger, messageOf } from "./log.ts";
import type { TargetInfo } from "./storage.ts";

export const TARGETS_PATH = "/api/bes/v1/targets";
/** Default time between two fetches of the targets (each credential delivery is audited: not too often). */
export const TARGETS_REFRESH_MS = 15 * 60_000;

export class TargetRegistry {
  #targets = new Map<string, TargetInfo>();
  #knownIds: string | null = null;
  #fetchedAt = 0;
  #inFlight: Promise<void> | null = null;

  constructor(
    readonly client: EngineClient,
    readonly identity: () => EngineIdentity,
    readonly log: Logger,
    readonly refreshMs = TARGETS_REFRESH_MS,
  ) {}

  /** The targets known now, by id order. */
  all(): TargetInfo[] {
    return [...this.#targets.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  get(id: string): TargetInfo | undefined {
    return this.#targets.get(id);
  }

  /** Fetches every target of this BES from the control plane (one fetch at a time). */
  refresh(): Promise<void> {
    this.#inFlight ??= this.#fetch().finally(() => this.#inFlight = null);
    return this.#inFlight;
  }

  async #fetch(): Promise<void> {
    const res = await this.client.post(this.identity(), TARGETS_PATH, {});
    const text = await res.text();
    if (res.status !== 200) {
      // The body of a refusal carries no secret; it is cut short all the same.
      throw new Error(`The control plane answered ${res.status} to ${TARGETS_PATH}: ${text.slice(0, 300)}`);
    }
    const body = JSON.parse(text) as { targets?: TargetInfo[] };
    const next = new Map<string, TargetInfo>();
    for (const t of body.targets ?? []) next.set(t.id, t);
    const added = [...next.keys()].filter((id) => !this.#targets.has(id));
    const removed = [...this.#targets.keys()].filter((id) => !next.has(id));
    this.#targets = next;
    this.#fetchedAt = Date.now();
    this.#knownIds = [...next.keys()].sort().join(",");
    if (added.length || removed.length) {
      this.log.log("info", "storage targets updated", {
        targets: this.all().map((t) => ({ id: t.id, name: t.name, type: t.type })),
        added,
        removed,
      });
    }
  }

  /**
   * Called with each heartbeat reply's `storageTargetIds`: fetches the targets again when the set changed
   * or the last fetch is older than `refreshMs`. A failed fetch is logged; the previous view stays.
   */
  async heartbeatSaw(ids: string[] | undefined, now = Date.now()): Promise<void> {
    const key = ids ? [...ids].sort().join(",") : null;
    const changed = key !== null && key !== this.#knownIds;
    if (!changed && now - this.#fetchedAt < this.refreshMs) return;
    try {
      await this.refresh();
    } catch (e) {
      this.log.log("warn", "could not fetch the storage targets", { error: messageOf(e) });
    }
  }

  /** The target `id`, fetching the targets again if it is not known. Null when it is not this BES's. */
  async find(id: string): Promise<TargetInfo | null> {
    if (!this.#targets.has(id)) await this.refresh();
    return this.#targets.get(id) ?? null;
  }
}
