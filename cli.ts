/**
 * Bootstrap, scripting and break-glass CLI: `deno task cli <command> [options] [--json]`.
 * With --json a command prints exactly one JSON object on stdout and nothing else. The database commands
 * open the KV directly; the automation verbs (cli_api.ts) go through the JSON API with a token.
 */
import { parseArgs } from "node:util";
import { API_USAGE, apiCommandOf, runApiCommand } from "./cli_api.ts";
import { createApiToken } from "./domain/api_tokens.ts";
import { parseConfig } from "./domain/config.ts";
import { userActor } from "./domain/auth.ts";
import { systemActor } from "./domain/rbac.ts";
import { markInitialized } from "./domain/setup.ts";
import { openStore } from "./domain/store.ts";
import { indexPolicyNames } from "./domain/policy_names.ts";
import {
  createAccount,
  createOrg,
  findAccountByName,
  listAccounts,
  rotateOrgSecret,
} from "./domain/tenancy.ts";
import { createUser, findUserByEmail, listUsers, resetPassword } from "./domain/users.ts";
import { randomToken } from "./domain/ids.ts";
import { checkInvariants } from "./domain/invariants.ts";
import { indexOpenRuns } from "./domain/run_lifecycle.ts";
import { indexFirstBackups, indexRestorePointsByHost } from "./domain/restore_points.ts";
import { indexRestorePointsByTarget } from "./domain/repositories.ts";
import { exportDatabase, restoreBundle, sealBundle } from "./domain/self_backup.ts";
import { PERMISSIONS, ROLE_PERMISSIONS } from "./domain/types.ts";

const USAGE = `Usage: deno task cli <command> [options] [--json]

Commands:
  create-admin --email E [--name N] [--account NAME]   create an administrator (password from stdin, or generated)
  create-org --account NAME --org NAME                 create an org (and the account if missing); prints its secret
  rotate-org-secret --org ID                           replace an org's registration secret; prints the new one
  reset-password --email E                             set a new password (from stdin, or generated and printed)
  list-users [--account NAME]                          list users
  create-token --email E --name N                      create an API token with that user's permissions
  export-bundle --db config|results --out FILE         write an encrypted self-backup bundle of one database
  restore-bundle FILE [--force]                        verify a bundle, then restore it into an empty database

These commands open the same database as the server (CADRES_KV / CADRES_DATA_DIR). A local KV file is used by
one process at a time: stop the server first, or use a remote KV.

${API_USAGE}`;

class CliError extends Error {}

async function readStdinPassword(): Promise<string | undefined> {
  if (Deno.stdin.isTerminal()) return undefined;
  const text = (await new Response(Deno.stdin.readable).text()).split("\n")[0].trim();
  return text || undefined;
}

async function main(args: string[]): Promise<number> {
  if (apiCommandOf(args)) {
    return await runApiCommand(args, {
      env: Deno.env.toObject(),
      print: (line) => console.log(line),
      printError: (line) => console.error(line),
    });
  }
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      email: { type: "string" },
      name: { type: "string" },
      account: { type: "string" },
      org: { type: "string" },
      db: { type: "string" },
      out: { type: "string" },
      force: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  const command = positionals[0];
  if (!command || values.help) {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  const out = (obj: Record<string, unknown>, text: string) =>
    console.log(values.json ? JSON.stringify(obj) : text);
  const parsed = parseConfig(Deno.env.toObject());
  if (!parsed.ok) throw new CliError(parsed.error);
  const store = await openStore(parsed.config);
  const { kv } = store;
  const now = new Date();
  const system = systemActor("cli");
  const need = (name: keyof typeof values) => {
    const v = values[name];
    if (typeof v !== "string" || !v) throw new CliError(`Missing --${name}`);
    return v;
  };
  try {
    switch (command) {
      case "create-admin": {
        const email = need("email");
        const accounts = await listAccounts(kv);
        let account = values.account
          ? await findAccountByName(kv, values.account)
          : accounts.length === 1
          ? accounts[0]
          : null;
        if (!account && values.account) {
          account = await createAccount(kv, system, { name: values.account }, now);
        }
        if (!account && accounts.length === 0) {
          account = await createAccount(kv, system, { name: "Default" }, now);
        }
        if (!account) throw new CliError("Several accounts exist: name one with --account");
        const given = await readStdinPassword();
        const password = given ?? randomToken(18);
        const user = await createUser(kv, system, {
          accountId: account.id,
          email,
          name: values.name ?? email.split("@")[0],
          role: "admin",
          orgScope: "all",
          password,
        }, now);
        await markInitialized(kv, now);
        out(
          { userId: user.id, accountId: account.id, email: user.email, ...(given ? {} : { password }) },
          `Created administrator ${user.email} in account ${account.name}` +
            (given ? "" : `\nPassword: ${password}`),
        );
        return 0;
      }
      case "create-org": {
        const accountName = need("account");
        const orgName = need("org");
        const account = (await findAccountByName(kv, accountName)) ??
          await createAccount(kv, system, { name: accountName }, now);
        const { org, secret } = await createOrg(kv, system, { accountId: account.id, name: orgName }, now);
        out(
          { accountId: account.id, orgId: org.id, secret },
          `Created organization ${org.name} (${org.id}) in ${account.name}\nRegistration secret (shown once): ${secret}`,
        );
        return 0;
      }
      case "rotate-org-secret": {
        const { org, secret } = await rotateOrgSecret(kv, system, need("org"), now);
        out({ orgId: org.id, secret }, `New registration secret for ${org.name} (shown once): ${secret}`);
        return 0;
      }
      case "reset-password": {
        const user = await findUserByEmail(kv, need("email"));
        if (!user) throw new CliError(`No user with email ${values.email}`);
        const given = await readStdinPassword();
        const { password } = await resetPassword(kv, system, user.id, { password: given }, now);
        out(
          { userId: user.id, email: user.email, ...(given ? {} : { password }) },
          `Password of ${user.email} reset; their sessions ended.` + (given ? "" : `\nPassword: ${password}`),
        );
        return 0;
      }
      case "list-users": {
        const accounts = values.account
          ? [await findAccountByName(kv, values.account)].filter((a) => a !== null)
          : await listAccounts(kv);
        if (values.account && accounts.length === 0) throw new CliError(`No account named ${values.account}`);
        const users = [];
        for (const a of accounts) {
          for (const u of await listUsers(kv, system, a.id)) {
            users.push({
              id: u.id,
              account: a.name,
              email: u.email,
              name: u.name,
              role: u.role,
              disabled: u.disabled,
            });
          }
        }
        out(
          { users },
          users.map((u) => `${u.email}\t${u.role}\t${u.account}${u.disabled ? "\tdisabled" : ""}`).join(
            "\n",
          ) || "No users.",
        );
        return 0;
      }
      case "create-token": {
        const user = await findUserByEmail(kv, need("email"));
        if (!user) throw new CliError(`No user with email ${values.email}`);
        const permissions = ROLE_PERMISSIONS[user.role].filter((p) => PERMISSIONS.includes(p));
        const { token, secret } = await createApiToken(kv, userActor(user), {
          name: need("name"),
          permissions: [...permissions],
          expiresInDays: 0,
        }, now);
        out(
          { tokenId: token.id, token: secret },
          `API token "${token.name}" for ${user.email} (shown once):\n${secret}`,
        );
        return 0;
      }
      case "export-bundle": {
        const db = need("db");
        if (db !== "config" && db !== "results") throw new CliError("--db must be config or results");
        const { entries, consistent, passes } = await exportDatabase(kv, db);
        const bundle = await sealBundle(
          entries,
          { database: db, createdAt: now, consistent },
          store.masterKey,
        );
        const path = need("out");
        await Deno.writeFile(path, bundle, { mode: 0o600 });
        out(
          { file: path, database: db, entries: entries.length, bytes: bundle.length, consistent, passes },
          `Wrote ${path}: ${db} DB, ${entries.length} entries, ${bundle.length} bytes, ` +
            (consistent ? "consistent snapshot" : `NOT proven consistent after ${passes} passes`),
        );
        return 0;
      }
      case "restore-bundle": {
        const file = positionals[1];
        if (!file) throw new CliError("Usage: restore-bundle FILE [--force]");
        const bytes = await Deno.readFile(file);
        const { header, written } = await restoreBundle(kv, bytes, store.masterKey, { force: values.force });
        // A bundle from before the policies' name index: every policy gets its entry.
        if (header.database === "config") await indexPolicyNames(kv, new Date(), { force: true });
        // A bundle from before the open-run index: its pending and running runs get their entries.
        if (header.database === "results") {
          await indexOpenRuns(kv, new Date(), { force: true });
          await indexRestorePointsByHost(kv, new Date(), { force: true });
          await indexFirstBackups(kv, new Date(), { force: true });
          await indexRestorePointsByTarget(kv, new Date(), { force: true });
        }
        const problems = await checkInvariants(kv);
        out(
          { database: header.database, createdAt: header.createdAt, written, invariantViolations: problems },
          `Restored ${written} entries of the ${header.database} DB from ${header.createdAt}.` +
            (problems.length
              ? `\nInvariant violations:\n  ${problems.join("\n  ")}`
              : "\nAll invariant checks pass."),
        );
        return problems.length ? 1 : 0;
      }
      default:
        throw new CliError(`Unknown command "${command}"\n\n${USAGE}`);
    }
  } finally {
    store.close();
  }
}

if (import.meta.main) {
  const json = Deno.args.includes("--json");
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (json) console.log(JSON.stringify({ error: { message } }));
    else console.error(`Error: ${message}`);
    Deno.exit(1);
  }
}
