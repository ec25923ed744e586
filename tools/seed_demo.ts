/** Seeds a realistic demo tenant: two accounts, several orgs, users of every role. Idempotent. */
import { createAccount, createOrg, findAccountByName, listOrgs } from "../domain/tenancy.ts";
import { createUser, findUserByEmail } from "../domain/users.ts";
import { systemActor } from "../domain/rbac.ts";
import { markInitialized } from "../domain/setup.ts";
import type { Role } from "../domain/types.ts";

/** The one password of every demo user (demo data only). */
export const DEMO_PASSWORD = "demo-password-2026";

const TENANTS: Array<{
  account: string;
  orgs: string[];
  users: Array<{ email: string; name: string; role: Role; orgs: "all" | string[] }>;
}> = [
  {
    account: "Northwind Logistics",
    orgs: ["Headquarters", "Warehouse East", "Retail Stores"],
    users: [
      { email: "admin@northwind.example", name: "Alex Admin", role: "admin", orgs: "all" },
      { email: "backup.admin@northwind.example", name: "Bea Backup", role: "backup_admin", orgs: "all" },
      {
        email: "operator@northwind.example",
        name: "Omar Operator",
        role: "operator",
        orgs: ["Headquarters"],
      },
      {
        email: "restore@northwind.example",
        name: "Rita Restore",
        role: "restore_operator",
        orgs: ["Warehouse East", "Retail Stores"],
      },
      { email: "viewer@northwind.example", name: "Victor Viewer", role: "viewer", orgs: ["Retail Stores"] },
    ],
  },
  {
    account: "Contoso Health",
    orgs: ["Clinic North", "Lab Services"],
    users: [
      { email: "admin@contoso.example", name: "Casey Admin", role: "admin", orgs: "all" },
      { email: "viewer@contoso.example", name: "Chris Viewer", role: "viewer", orgs: ["Lab Services"] },
    ],
  },
];

/** Creates whatever of the demo tenants is missing and returns the demo logins. */
export async function seedDemo(kv: Deno.Kv, now: Date) {
  const actor = systemActor("demo");
  const users: Array<{ email: string; role: Role }> = [];
  for (const tenant of TENANTS) {
    const account = (await findAccountByName(kv, tenant.account)) ??
      await createAccount(kv, actor, { name: tenant.account }, now);
    const existing = new Map((await listOrgs(kv, actor, account.id)).map((o) => [o.name, o.id]));
    for (const name of tenant.orgs) {
      if (!existing.has(name)) {
        existing.set(name, (await createOrg(kv, actor, { accountId: account.id, name }, now)).org.id);
      }
    }
    for (const u of tenant.users) {
      users.push({ email: u.email, role: u.role });
      if (await findUserByEmail(kv, u.email)) continue;
      await createUser(kv, actor, {
        accountId: account.id,
        email: u.email,
        name: u.name,
        role: u.role,
        orgScope: u.orgs === "all" ? "all" : u.orgs.map((n) => existing.get(n)!),
        password: DEMO_PASSWORD,
      }, now);
    }
  }
  await markInitialized(kv, now);
  return { password: DEMO_PASSWORD, users };
}

if (import.meta.main) {
  const { parseConfig } = await import("../domain/config.ts");
  const { openStore } = await import("../domain/store.ts");
  const parsed = parseConfig(Deno.env.toObject());
  if (!parsed.ok) {
    console.error(parsed.error);
    Deno.exit(1);
  }
  const store = await openStore(parsed.config);
  const result = await seedDemo(store.kv, new Date());
  console.log(JSON.stringify(result));
  store.close();
}
