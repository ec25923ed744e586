/**
 * The repository config: the object "config", JSON in clear, written once by `init`. Its SHA-256 is
 * sealed inside every key object, so a changed config (say, encryption switched to none) is detected
 * when the repository is opened.
 */
import type { Backend } from "./backend.ts";
import { toHex } from "./bytes.ts";
import type { Encryption } from "./blob.ts";
import {
  type ChunkerParams,
  DEFAULT_CHUNKER_PARAMS,
  IMAGE_CHUNK_SIZE,
  validateChunkerParams,
} from "./chunker.ts";
import type { Compression } from "./compression.ts";
import { FormatVersionError, IntegrityError, MissingObjectError, RepoConfigError } from "./errors.ts";
import { PACK_TARGET_BYTES } from "./pack.ts";

/** The repository format version this program writes and reads. */
export const REPO_FORMAT_VERSION = 1;
/** The value of the config's "format" field. */
export const REPO_FORMAT_NAME = "cadres-repository";
/** Object name of the config. */
export const CONFIG_OBJECT = "config";

/** The repository config (object "config"). */
export interface RepoConfig {
  format: typeof REPO_FORMAT_NAME;
  version: number;
  /** 16 random bytes, hex: binds key objects to this repository. */
  id: string;
  createdAt: string;
  chunker: ChunkerParams;
  imageChunkSize: number;
  compression: Compression;
  encryption: Encryption;
  dedup: boolean;
  packTargetBytes: number;
}

/** Options of a new repository; unspecified ones take the guide's defaults (zstd, AES-256-GCM, dedup on). */
export interface RepoOptions {
  compression?: Compression;
  encryption?: Encryption;
  dedup?: boolean;
  chunker?: ChunkerParams;
  imageChunkSize?: number;
  packTargetBytes?: number;
}

const COMPRESSIONS = new Set(["zstd", "lz4", "none"]);
const ENCRYPTIONS = new Set(["aes-256-gcm", "aes-256-cbc", "none"]);

/** A new config from `options`. Throws `RepoConfigError` on an invalid option. */
export function newConfig(options: RepoOptions, now: Date): RepoConfig {
  const id = toHex(crypto.getRandomValues(new Uint8Array(16)));
  const config: RepoConfig = {
    format: REPO_FORMAT_NAME,
    version: REPO_FORMAT_VERSION,
    id,
    createdAt: now.toISOString(),
    chunker: { ...(options.chunker ?? DEFAULT_CHUNKER_PARAMS) },
    imageChunkSize: options.imageChunkSize ?? IMAGE_CHUNK_SIZE,
    compression: options.compression ?? "zstd",
    encryption: options.encryption ?? "aes-256-gcm",
    dedup: options.dedup ?? true,
    packTargetBytes: options.packTargetBytes ?? PACK_TARGET_BYTES,
  };
  validateConfig(config);
  return config;
}

function validateConfig(c: RepoConfig): void {
  if (!COMPRESSIONS.has(c.compression)) throw new RepoConfigError(`Unknown compression "${c.compression}"`);
  if (!ENCRYPTIONS.has(c.encryption)) throw new RepoConfigError(`Unknown encryption "${c.encryption}"`);
  if (typeof c.dedup !== "boolean") throw new RepoConfigError(`Invalid dedup setting`);
  if (!/^[0-9a-f]{32}$/.test(c.id)) throw new RepoConfigError(`Invalid repository id`);
  validateChunkerParams(c.chunker);
  for (
    const [k, v] of [["imageChunkSize", c.imageChunkSize], ["packTargetBytes", c.packTargetBytes]] as const
  ) {
    if (!Number.isInteger(v) || v < 1024 || v > 64 * 1024 * 1024) {
      throw new RepoConfigError(`Invalid ${k} ${v}`);
    }
  }
}

/**
 * Parses config bytes that are about to be stored (the data API's `init`): UTF-8 JSON of a config of this
 * format and a version this program reads, every field valid. Throws `RepoConfigError` naming the problem,
 * `FormatVersionError` for a newer version.
 */
export function parseConfigBytes(bytes: Uint8Array, location = "the config given"): RepoConfig {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new RepoConfigError(`${location} is not JSON`);
  }
  if (typeof raw !== "object" || raw === null || raw.format !== REPO_FORMAT_NAME) {
    throw new RepoConfigError(`${location}: format is not "${REPO_FORMAT_NAME}"`);
  }
  if (typeof raw.version !== "number" || !Number.isInteger(raw.version) || raw.version < 1) {
    throw new RepoConfigError(`${location} has an invalid version`);
  }
  if (raw.version > REPO_FORMAT_VERSION) {
    throw new FormatVersionError(location, raw.version, REPO_FORMAT_VERSION);
  }
  const config = raw as unknown as RepoConfig;
  try {
    validateConfig(config);
  } catch (e) {
    throw new RepoConfigError(`${location} is invalid: ${(e as Error).message}`);
  }
  return config;
}

/** The config bytes as stored. */
export function encodeConfig(config: RepoConfig): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(JSON.stringify(config, null, 2) + "\n");
}

/**
 * The config of the repository at `backend` and its stored bytes. Throws `RepoConfigError` if the
 * location is not a repository, `FormatVersionError` if it is of a newer format.
 */
export async function readConfig(backend: Backend): Promise<{ config: RepoConfig; bytes: Uint8Array }> {
  let bytes: Uint8Array;
  try {
    bytes = await backend.get(CONFIG_OBJECT);
  } catch (e) {
    if (e instanceof MissingObjectError) {
      throw new RepoConfigError(`${backend.location} is not a Cadres repository: it has no config object`);
    }
    throw e;
  }
  // A location holding key objects is a repository: a config it cannot read there is damaged, not foreign.
  const notRepo = async (detail: string): Promise<never> => {
    for await (const _ of backend.list("keys/")) {
      throw new IntegrityError("config", CONFIG_OBJECT, `${detail} (repository ${backend.location})`);
    }
    throw new RepoConfigError(`${backend.location} is not a Cadres repository: ${detail}`);
  };
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return await notRepo("its config is not JSON");
  }
  if (raw?.format !== REPO_FORMAT_NAME) {
    return await notRepo(`config format is not "${REPO_FORMAT_NAME}"`);
  }
  if (typeof raw.version !== "number" || !Number.isInteger(raw.version) || raw.version < 1) {
    return await notRepo("config has an invalid version");
  }
  if (raw.version > REPO_FORMAT_VERSION) {
    throw new FormatVersionError(`repository ${backend.location}`, raw.version, REPO_FORMAT_VERSION);
  }
  const config = raw as unknown as RepoConfig;
  try {
    validateConfig(config);
  } catch (e) {
    // RepoConfigError, or a TypeError when a field is missing or of the wrong type.
    return await notRepo(`config is invalid: ${(e as Error).message}`);
  }
  return { config, bytes };
}
