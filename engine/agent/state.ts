/**
 * The agent's local record (`state.json` in its data folder): the last snapshot of each (policy, repository)
 * — the parent of the next incremental, checked to exist in the repository before it is used — and the
 * outcome of recent jobs (what `agent pre-patch --wait` watches). Written atomically; one writer per agent.
 */
import { writeFileAtomic } from "./files.ts";

export const STATE_FILE = "state.json";
/** Job outcomes kept (newest first). */
const JOBS_KEPT = 200;

/** The repository a job writes (the data token's, the key reply's). */
export interface RepositoryRef {
  target: string;
  path: string;
  generation: number;
}

/** The last snapshot of a chain. */
export interface ChainRecord {
  policyId: string;
  repository: RepositoryRef;
  /** "file" or "image" (an image chain's parent must be an image snapshot). */
  backupType: string;
  snapshotId: string;
  chainId: string;
  type: "full" | "incremental";
  completedAt: string;
  files: number;
  totalBytes: number;
}

/** A finished job. */
export interface JobRecord {
  jobId: string;
  kind: string;
  status: string;
  endedAt: string;
}

interface StateFile {
  version: 1;
  chains: Record<string, ChainRecord>;
  jobs: JobRecord[];
}

function chainKey(policyId: string, repo: RepositoryRef): string {
  return JSON.stringify([policyId, repo.target, repo.path, repo.generation]);
}

/** The state file of one agent. */
export class AgentState {
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(readonly path: string, private data: StateFile) {}

  /** Loads `state.json` from `dir` (an empty state when there is none). Throws if it is not readable JSON. */
  static async load(dir: string): Promise<AgentState> {
    const path = `${dir}/${STATE_FILE}`;
    try {
      const data = JSON.parse(await Deno.readTextFile(path)) as StateFile;
      if (data?.version !== 1 || typeof data.chains !== "object") {
        throw new Error(`${path} is not an agent state file of version 1`);
      }
      data.jobs ??= [];
      return new AgentState(path, data);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        return new AgentState(path, { version: 1, chains: {}, jobs: [] });
      }
      if (e instanceof SyntaxError) {
        throw new Error(
          `${path} is damaged (${e.message}); move it away to start over (next backups are fulls)`,
        );
      }
      throw e;
    }
  }

  /** The last snapshot recorded for (policy, repository), or null. */
  lastSnapshot(policyId: string, repo: RepositoryRef): ChainRecord | null {
    return this.data.chains[chainKey(policyId, repo)] ?? null;
  }

  /** Records a chain's newest snapshot. */
  recordSnapshot(record: ChainRecord): Promise<void> {
    return this.#write(() => {
      this.data.chains[chainKey(record.policyId, record.repository)] = record;
    });
  }

  /** Records a job's outcome. */
  recordJob(record: JobRecord): Promise<void> {
    return this.#write(() => {
      this.data.jobs = [record, ...this.data.jobs.filter((j) => j.jobId !== record.jobId)].slice(
        0,
        JOBS_KEPT,
      );
    });
  }

  /** The recorded outcome of `jobId`, or null. */
  job(jobId: string): JobRecord | null {
    return this.data.jobs.find((j) => j.jobId === jobId) ?? null;
  }

  #write(change: () => void): Promise<void> {
    const next = this.#queue.catch(() => {}).then(async () => {
      change();
      await writeFileAtomic(
        this.path,
        new TextEncoder().encode(JSON.stringify(this.data, null, 2) + "\n"),
        0o600,
      );
    });
    this.#queue = next;
    return next;
  }
}
