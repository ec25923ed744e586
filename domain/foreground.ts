/**
 * Background work gives way to the console. Deno KV runs the operations of one handle in turn, in the
 * order they were issued, on one thread: while a scheduler storm keeps writes of 100 jobs in flight, a
 * page's every read waits behind them (measured: a point read behind 4 writes of 500 keys took 45 ms at
 * the median against 0.05 ms idle), and a page makes 10–20 reads one after another.
 *
 * So the app counts the console requests in flight per KV (`consoleRequest`), and the scheduler's
 * writer, before each write while one is in flight, keeps a single write outstanding and waits for the
 * console to be idle — at most `maxWaitMs`, so a user who never stops clicking slows a storm but never
 * stops it. This is a local scheduling hint (a process only sees its own requests), never a correctness
 * condition: nothing depends on it but latency.
 */

interface State {
  active: number;
  idle: Array<() => void>;
}

const states = new WeakMap<Deno.Kv, State>();

function stateOf(kv: Deno.Kv): State {
  let state = states.get(kv);
  if (!state) states.set(kv, state = { active: 0, idle: [] });
  return state;
}

/** Marks a console request in flight on `kv`; call the returned function when it is answered. */
export function consoleRequest(kv: Deno.Kv): () => void {
  const state = stateOf(kv);
  state.active++;
  let ended = false;
  return () => {
    if (ended) return;
    ended = true;
    if (--state.active === 0) { for (const wake of state.idle.splice(0)) wake(); }
  };
}

/** True while a console request is in flight on `kv`. */
export function consoleBusy(kv: Deno.Kv): boolean {
  return (states.get(kv)?.active ?? 0) > 0;
}

/** Resolves once no console request is in flight on `kv`, or after `maxWaitMs`; true when it waited. */
export async function giveWayToConsole(kv: Deno.Kv, maxWaitMs: number): Promise<boolean> {
  const state = states.get(kv);
  if (!state || state.active === 0) return false;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      state.idle.splice(state.idle.indexOf(wake), 1);
      resolve();
    }, maxWaitMs);
    const wake = () => {
      clearTimeout(timer);
      resolve();
    };
    state.idle.push(wake);
  });
  return true;
}
