/**
 * The agent's identity in its data folder: an Ed25519 key pair (the private key in `agent.key`, PKCS#8 PEM,
 * mode 0600, created once) and `identity.json` (the public key and, after enrollment, the host id the
 * control plane gave it). Restarting with the same folder enrolls the same key again, which the control plane
 * answers with the same id (idempotent enrollment).
 */
import nodeCrypto from "node:crypto";
import { toBase64Url } from "../protocol/signing.ts";
import type { PrivateKey } from "../protocol/signing.ts";
import { writeFileAtomic } from "./files.ts";

export const KEY_FILE = "agent.key";
export const IDENTITY_FILE = "identity.json";

/** `identity.json`. */
export interface IdentityFile {
  version: 1;
  /** base64url of the raw 32-byte Ed25519 public key. */
  publicKey: string;
  /** The host id, once enrolled. */
  id: string | null;
  controlPlane: string | null;
  enrolledAt: string | null;
}

/** The key pair and what is known about the enrollment. */
export interface AgentIdentity {
  privateKey: PrivateKey;
  publicKey: string;
  file: IdentityFile;
}

function publicKeyOf(privateKey: PrivateKey): string {
  const spki = new Uint8Array(nodeCrypto.createPublicKey(privateKey).export({ format: "der", type: "spki" }));
  return toBase64Url(spki.slice(12));
}

/**
 * Loads the identity in `dir`, creating the folder (0700) and a key pair on first start. A private key file
 * readable by others is made private (0600) and the fact returned in `warnings`.
 */
export async function loadIdentity(dir: string): Promise<AgentIdentity & { warnings: string[] }> {
  const warnings: string[] = [];
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const keyPath = `${dir}/${KEY_FILE}`;
  let pem: string;
  try {
    pem = await Deno.readTextFile(keyPath);
    const mode = (await Deno.stat(keyPath)).mode;
    if (mode !== null && (mode & 0o077) !== 0) {
      await Deno.chmod(keyPath, 0o600);
      warnings.push(`${keyPath} was readable by others (mode ${(mode & 0o777).toString(8)}); it is 0600 now`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    const pair = nodeCrypto.generateKeyPairSync("ed25519");
    pem = String(pair.privateKey.export({ format: "pem", type: "pkcs8" }));
    await writeFileAtomic(keyPath, new TextEncoder().encode(pem), 0o600);
  }
  let privateKey: PrivateKey;
  try {
    privateKey = nodeCrypto.createPrivateKey(pem);
  } catch (e) {
    throw new Error(`${keyPath} is not a PKCS#8 PEM private key: ${(e as Error).message}`);
  }
  if (privateKey.asymmetricKeyType !== "ed25519") {
    throw new Error(`${keyPath} holds a ${privateKey.asymmetricKeyType} key, not an Ed25519 key`);
  }
  const publicKey = publicKeyOf(privateKey);
  let file: IdentityFile = { version: 1, publicKey, id: null, controlPlane: null, enrolledAt: null };
  try {
    const stored = JSON.parse(await Deno.readTextFile(`${dir}/${IDENTITY_FILE}`)) as IdentityFile;
    // An identity of another key (the key file was replaced) is not this agent's: enroll anew.
    if (stored.publicKey === publicKey) file = { ...file, ...stored };
    else warnings.push(`${IDENTITY_FILE} names another key than ${KEY_FILE}; enrolling this key`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound) && !(e instanceof SyntaxError)) throw e;
  }
  return { privateKey, publicKey, file, warnings };
}

/** Records the enrollment in `identity.json`. */
export async function saveIdentity(dir: string, file: IdentityFile): Promise<void> {
  await writeFileAtomic(
    `${dir}/${IDENTITY_FILE}`,
    new TextEncoder().encode(JSON.stringify(file, null, 2) + "\n"),
    0o600,
  );
}
