/**
 * A KV whose next `conflicts` atomic commits each lose a race: just before such a commit, another writer
 * rewrites `key` (same value, new versionstamp), so a commit that checked `key` fails its check. Tests use
 * it to prove a commit retry either survives lost races or throws, never returning as if it had written.
 */
export function contendedKv(
  real: Deno.Kv,
  key: Deno.KvKey,
  conflicts: number,
): { kv: Deno.Kv; commits: () => number } {
  let left = conflicts;
  let commits = 0;
  const kv = new Proxy(real, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            commits++;
            if (left > 0) {
              left--;
              const current = await target.get(key);
              await target.set(key, current.value);
            }
            return await commit();
          };
          return op;
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv, commits: () => commits };
}
