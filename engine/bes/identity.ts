/**
 * The BES's identity in its data folder:
 * - `bes.key`: its Ed25519 private key (PKCS#8 PEM), created once with mode 0600; the BES refuses to start
 *   when the file is readable by group or others (as ssh does), since whoever reads it is this BES.
 * - `identity.json`: its public key, the id the control plane gave it, and the last registration reply
 *   (which will carry the control plane's token public key), written atomically.
 * Registration is the signed registration of the engine protocol (proof of possession); registering the
 * same key again on every start is idempotent (same id, details refreshed).
 */
import nodeCrypto from "node:crypto";
import { type EngineClient, type EngineIdentity } from "../protocol/client.ts";
import type { PrivateKey } from "../protocol/signing.ts";

export const KEY_FILE = "bes.key";
export const IDENTITY_FILE = "identity.json";

/** What `identity.json` holds. */
export interface StoredIdentity {
  id: string;
  publicKey: string;
  controlPlane: string;
  name: string;
  firstRegisteredAt: string;
  lastRegisteredAt: string;
  /** The registration reply as received: id, status, heartbeatIntervalSeconds (and later tokenPublicKey). */
  registration: Record<string, unknown>;
}

/** The data folder is unusable (permissions, a damaged file): the message says which file and why. */
export class IdentityError extends Error {}

/** Creates the data folder (mode 0700) if it does not exist. */
export async function ensureDataDir(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await Deno.stat(dir);
  if (!info.isDirectory) throw new IdentityError(`${dir} is not a folder`);
}

/** The raw public key (base64url) of an Ed25519 private key. */
export function publicKeyOf(privateKey: PrivateKey): string {
  const jwk = nodeCrypto.createPublicKey(privateKey).export({ format: "jwk" }) as { x?: string };
  if (!jwk.x) throw new IdentityError("The key is not an Ed25519 key");
  return jwk.x;
}

/**
 * The key pair of `dir/bes.key`, created (0600) when absent. Throws `IdentityError` when the file is
 * readable by others, or is not an Ed25519 private key.
 */
export async function loadOrCreateKey(
  dir: string,
): Promise<{ privateKey: PrivateKey; publicKey: string; created: boolean }> {
  const path = `${dir}/${KEY_FILE}`;
  let pem: string;
  let created = false;
  try {
    pem = await Deno.readTextFile(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    const pair = nodeCrypto.generateKeyPairSync("ed25519");
    pem = pair.privateKey.export({ format: "pem", type: "pkcs8" }) as string;
    try {
      await Deno.writeTextFile(path, pem, { createNew: true, mode: 0o600 });
      const file = await Deno.open(path, { read: true });
      try {
        await file.sync();
      } finally {
        file.close();
      }
      created = true;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      pem = await Deno.readTextFile(path); // another start created it meanwhile
    }
  }
  const mode = (await Deno.stat(path)).mode;
  if (mode !== null && (mode & 0o077) !== 0) {
    throw new IdentityError(
      `${path} is readable by others (mode ${
        (mode & 0o777).toString(8)
      }): whoever reads it can act as this ` +
        `BES. Run "chmod 600 ${path}" and start again.`,
    );
  }
  let privateKey: PrivateKey;
  try {
    privateKey = nodeCrypto.createPrivateKey({ key: pem, format: "pem" });
  } catch (e) {
    throw new IdentityError(`${path} is not a PEM private key: ${(e as Error).message}`);
  }
  if (privateKey.asymmetricKeyType !== "ed25519") {
    throw new IdentityError(`${path} holds a ${privateKey.asymmetricKeyType} key, not an Ed25519 key`);
  }
  return { privateKey, publicKey: publicKeyOf(privateKey), created };
}

/** `identity.json`, or null before the first registration. Throws `IdentityError` when it is damaged. */
export async function readIdentity(dir: string): Promise<StoredIdentity | null> {
  const path = `${dir}/${IDENTITY_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    const value = JSON.parse(text) as StoredIdentity;
    if (typeof value.id !== "string" || typeof value.publicKey !== "string") {
      throw new Error("fields missing");
    }
    return value;
  } catch (e) {
    throw new IdentityError(
      `${path} is damaged (${(e as Error).message}); remove it to register again with the same key`,
    );
  }
}

/** Writes `data` to `path` atomically (temporary file, fsync, rename) with `mode`. */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.writeTextFile(tmp, data, { mode, createNew: true });
    const file = await Deno.open(tmp, { read: true });
    try {
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** A refused registration: the control plane's status and error, and whether trying later may help. */
export class RegistrationError extends Error {
  constructor(message: string, readonly status: number, readonly retryable: boolean) {
    super(message);
  }
}

/** What the BES registers besides its key. */
export interface RegistrationDetails {
  name: string;
  hostname: string;
  ipAddress: string;
  port: number;
  version: string;
  deploymentModel?: "on_premise" | "cloud_vm" | "cadres_hosted";
  /** Fields a later protocol version adds (e.g. the data API certificate), sent as they are. */
  extra?: Record<string, unknown>;
}

/**
 * Registers the key of `dir` with the control plane (signed by that key) and records the reply in
 * `identity.json`. Returns the identity to sign requests with and the reply. Throws `RegistrationError`
 * (the control plane's answer, never the secret) or a network error.
 */
export async function register(
  client: EngineClient,
  dir: string,
  secret: string,
  keys: { privateKey: PrivateKey; publicKey: string },
  details: RegistrationDetails,
  now: () => Date = () => new Date(),
): Promise<
  { identity: EngineIdentity; stored: StoredIdentity; created: boolean; previousId: string | null }
> {
  const res = await client.sendRegistration("bes", secret, keys.privateKey, {
    name: details.name,
    deploymentModel: details.deploymentModel ?? "on_premise",
    publicKey: keys.publicKey,
    hostname: details.hostname,
    ipAddress: details.ipAddress,
    port: details.port,
    version: details.version,
    ...details.extra,
  });
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: reported below with the status
  }
  if (res.status !== 200 && res.status !== 201) {
    const error = body.error as { code?: string; message?: string } | undefined;
    throw new RegistrationError(
      `The control plane refused the registration (${res.status}${error?.code ? ` ${error.code}` : ""}): ${
        error?.message ?? text.slice(0, 200)
      }`,
      res.status,
      res.status === 429 || res.status >= 500,
    );
  }
  if (typeof body.id !== "string") {
    throw new RegistrationError("The registration reply has no id", res.status, true);
  }
  const previous = await readIdentity(dir).catch(() => null);
  const at = now().toISOString();
  const stored: StoredIdentity = {
    id: body.id,
    publicKey: keys.publicKey,
    controlPlane: client.baseUrl,
    name: details.name,
    firstRegisteredAt: previous?.publicKey === keys.publicKey && previous.firstRegisteredAt
      ? previous.firstRegisteredAt
      : at,
    lastRegisteredAt: at,
    registration: body,
  };
  await writeFileAtomic(`${dir}/${IDENTITY_FILE}`, JSON.stringify(stored, null, 2) + "\n");
  return {
    identity: { kind: "bes", id: body.id, privateKey: keys.privateKey, publicKey: keys.publicKey },
    stored,
    created: res.status === 201,
    previousId: previous?.id && previous.id !== body.id ? previous.id : null,
  };
}
