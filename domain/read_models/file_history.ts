/** Read model of a file's history on a host (Backup > Restore > file history). */
import { ValidationError } from "../errors.ts";
import { type FileHistoryView, getFileHistory } from "../file_history.ts";
import { type Host, listHosts } from "../hosts.ts";
import type { Actor } from "../rbac.ts";

/**
 * A file's versions on a host (none without a path); a refused path is `pathError`, not a throw. The hosts a
 * version may be restored to are read only when a version is present.
 */
export async function getFileHistoryPage(
  kv: Deno.Kv,
  actor: Actor,
  params: { host: Host; path: string; page: number },
  now: Date,
) {
  let view: FileHistoryView | null = null;
  let pathError: string | undefined;
  if (params.path) {
    try {
      view = await getFileHistory(kv, actor, params.host.id, params.path, now, params.page);
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e;
      pathError = e.fields.path ?? e.message;
    }
  }
  const hosts = view && view.versions.some((v) => v.state === "present")
    ? (await listHosts(kv, actor, { limit: 200 })).values
    : [];
  return { view, pathError, hosts };
}
