/** Opens the configured KV (taking the one-process lock for a local file) and the master key. */
import { type Config, loadMasterKey } from "./config.ts";
import { isLocalKvPath, lockKvFile } from "./kv.ts";

export interface Store {
  kv: Deno.Kv;
  masterKey: Uint8Array;
  close(): void;
}

/** Opens KV and loads the master key. Throws with an operator-readable message when it cannot. */
export async function openStore(config: Config): Promise<Store> {
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
  try {
    kv = await Deno.openKv(config.kvLocation);
  } catch (error) {
    lock?.close();
    throw new Error(`Cannot open the database at ${config.kvLocation}: ${(error as Error).message}`);
  }
  return {
    kv,
    masterKey,
    close() {
      kv.close();
      lock?.close();
    },
  };
}
