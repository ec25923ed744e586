/** Opens the configured KV (taking the one-process lock for a local file) and the master key. */
import { type Config, loadMasterKey } from "./config.ts";
import { isLocalKvPath, lockKvFile } from "./kv.ts";

export interface Store {
  kv: Deno.Kv;
  /**
   * The handle background jobs (crons) use. On a local file it is a second handle on the same database:
   * Deno KV runs every operation of one handle in turn on one thread, so a scheduler storm writing
   * 100,000 jobs through the requests' handle would queue every page's reads behind its writes; with
   * its own handle (its own SQLite connection, WAL mode) the pages' reads do not wait for the tick's
   * writes, and the two handles' writes are serialized by SQLite (checked writes stay atomic across
   * them). On `:memory:` (two handles would be two databases), on a remote KV, and unless asked for
   * (`openStore(config, { jobsHandle: true })`: the server does) it is `kv` itself.
   */
  jobsKv: Deno.Kv;
  masterKey: Uint8Array;
  close(): void;
}

/** Opens KV and loads the master key. Throws with an operator-readable message when it cannot. */
export async function openStore(config: Config, options: { jobsHandle?: boolean } = {}): Promise<Store> {
  let lock: Deno.FsFile | null = null;
  if (isLocalKvPath(config.kvLocation)) {
    const dir = config.kvLocation.includes("/")
      ? config.kvLocation.slice(0, config.kvLocation.lastIndexOf("/"))
      : ".";
    await Deno.mkdir(dir || "/", { recursive: true });
    lock = await lockKvFile(config.kvLocation);
  }
  const masterKey = await loadMasterKey(config);
  let kv: Deno.Kv;
  let jobsKv: Deno.Kv;
  try {
    kv = await Deno.openKv(config.kvLocation);
    jobsKv = options.jobsHandle && isLocalKvPath(config.kvLocation)
      ? await Deno.openKv(config.kvLocation)
      : kv;
  } catch (error) {
    lock?.close();
    throw new Error(`Cannot open the database at ${config.kvLocation}: ${(error as Error).message}`);
  }
  return {
    kv,
    jobsKv,
    masterKey,
    close() {
      if (jobsKv !== kv) jobsKv.close();
      kv.close();
      lock?.close();
    },
  };
}
