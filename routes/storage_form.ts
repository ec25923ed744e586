/** Maps the storage-target form (flat fields per type) to the domain input, and zod issues back to fields. */
import type { z } from "zod";
import type { FieldErrors } from "../domain/errors.ts";
import type { TargetType } from "../domain/storage.ts";
import { type FormFields, str } from "./forms.ts";

/** Form field prefix of each type's connection fields (both S3 flavours share theirs). */
export const TYPE_GROUP: Record<TargetType, string> = {
  s3: "s3",
  s3_compatible: "s3",
  smb: "smb",
  nfs: "nfs",
  iscsi: "iscsi",
  local: "local",
};

export const CONFIG_FIELDS: Record<string, Array<{ name: string; label: string; hint?: string }>> = {
  s3: [
    { name: "endpoint", label: "Endpoint URL", hint: "e.g. https://s3.eu-west-1.amazonaws.com" },
    { name: "bucket", label: "Bucket", hint: "3–63 lowercase letters, digits, dots, hyphens" },
    { name: "region", label: "Region", hint: "e.g. eu-west-1 (S3 Compatible: any, e.g. us-east-1 or auto)" },
    { name: "prefix", label: "Prefix (optional)", hint: "e.g. backups/prod" },
  ],
  smb: [
    { name: "server", label: "Server", hint: "hostname or IP" },
    { name: "share", label: "Share name" },
    { name: "path", label: "Path within the share (optional)" },
  ],
  nfs: [
    { name: "server", label: "Server", hint: "hostname or IP" },
    { name: "exportPath", label: "Export path", hint: "e.g. /exports/backup" },
    { name: "mountOptions", label: "Mount options (optional)", hint: "e.g. vers=4.1,hard,timeo=600" },
  ],
  iscsi: [
    { name: "portal", label: "Target portal", hint: "host:port, e.g. 10.0.0.5:3260" },
    { name: "iqn", label: "IQN", hint: "e.g. iqn.2004-05.com.example:storage.disk1" },
    { name: "lun", label: "LUN", hint: "0–16383" },
  ],
  local: [{ name: "path", label: "Filesystem path", hint: "absolute, e.g. /srv/backup" }],
};

/**
 * The connection config of the chosen type, from `<group>_<field>` inputs. Empty inputs are left out,
 * so optional fields take their schema defaults and required ones say "is required".
 */
export function configFromForm(type: string, form: FormFields): Record<string, string> {
  const group = TYPE_GROUP[type as TargetType];
  if (!group) return {};
  return Object.fromEntries(
    CONFIG_FIELDS[group].map((f) => [f.name, str(form, `${group}_${f.name}`).trim()]).filter(([, v]) =>
      v !== ""
    ),
  );
}

/** Credentials when a secret was typed (an empty secret means "keep" on edit, "none" on create). */
export function credentialsFromForm(form: FormFields) {
  const secret = str(form, "cred_secret");
  if (!secret) return undefined;
  return { username: str(form, "cred_username"), secret, credentialType: str(form, "cred_type") };
}

/** zod issues → form field names (`config.bucket` → `s3_bucket`, `credentials.secret` → `cred_secret`). */
export function targetFieldErrors(type: string, error: z.ZodError): FieldErrors {
  const group = TYPE_GROUP[type as TargetType] ?? "";
  const out: FieldErrors = {};
  for (const issue of error.issues) {
    const [head, sub] = issue.path.map(String);
    const key = head === "config" && sub
      ? `${group}_${sub}`
      : head === "credentials" && sub
      ? `cred_${sub === "credentialType" ? "type" : sub}`
      : head ?? "form";
    const message = issue.message[0]?.toUpperCase() + issue.message.slice(1);
    out[key] ??= message;
  }
  return out;
}
