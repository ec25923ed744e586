/**
 * A KV whose atomic commits can be held at a gate: while the gate is closed, every commit made through
 * the returned `kv` waits (reads and everything else pass through, unless `reads`: then point reads wait
 * too). Tests use it to hold a group commit
 * in flight, so the writes submitted meanwhile are queued for the next shared commit, deterministically.
 * Commits made through the real KV are never held.
 */
export function gatedKv(real: Deno.Kv, options: { reads?: boolean } = {}) {
  let gate: Promise<void> | null = null;
  let release = () => {};
  const kv = new Proxy(real, {
    get(target, prop) {
      // With `reads`, point reads wait at the gate too.
      if (options.reads && (prop === "get" || prop === "getMany")) {
        const read = (Reflect.get(target, prop, target) as (...args: unknown[]) => Promise<unknown>).bind(
          target,
        );
        return async (...args: unknown[]) => {
          while (gate) await gate;
          return await read(...args);
        };
      }
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            while (gate) await gate;
            return await commit();
          };
          return op;
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return {
    kv,
    /** Holds every commit made from now on (and those waiting) until `open()`. */
    close() {
      if (!gate) gate = new Promise((resolve) => release = resolve);
    },
    open() {
      gate = null;
      release();
    },
  };
}
