/**
 * `deno task bes --control-plane URL --secret SECRET --data DIR [--listen HOST:PORT] [--name NAME]
 * [--insecure-http] …`: runs a BES until SIGINT or SIGTERM (then it finishes its running jobs and stops).
 * docs/engines.md describes the flags, the data folder and a systemd unit.
 */
import { startBes } from "./bes.ts";
import { parseBesArgs, USAGE, UsageError } from "./config.ts";
import { IdentityError } from "./identity.ts";
import { RegistrationError } from "./identity.ts";

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(USAGE);
    Deno.exit(0);
  }
  let config;
  try {
    config = parseBesArgs(Deno.args, { CADRES_BES_SECRET: Deno.env.get("CADRES_BES_SECRET") });
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`${e.message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  let bes;
  try {
    bes = await startBes(config);
  } catch (e) {
    if (e instanceof RegistrationError || e instanceof IdentityError) {
      console.error(e.message);
      Deno.exit(1);
    }
    throw e;
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await bes.stop();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
