/**
 * The BES's side of the data API (ENGINE.md §5) as the running program wires it: which of its targets a
 * token's repository is, the control plane's token key from the registration reply, and the TLS certificate
 * it serves (kept in the data folder, renewed before it expires).
 *
 * - `targetRepositoryResolver`: a token's repository {target, path, generation} is the folder or prefix
 *   `<path>` under the root of this BES's target `target` (Local folders, mounted SMB/NFS/iSCSI, S3 with the
 *   credentials the targets endpoint delivers). Only `cadres/<policy>/g<generation>` paths are served. A
 *   target is opened (and its reachability checked) once per version of its settings; the backend of a
 *   repository is kept, so the data API's per-repository caches last.
 * - `tokenKeyOf`: the Ed25519 key of the registration reply's `tokenPublicKey`, parsed once.
 * - `CertificateKeeper`: `ensureCertificate` at start, then a daily check that renews the certificate
 *   before it expires (or when the machine's names changed), calling back so the listener serves the new
 *   one and the next heartbeat reports it.
 */
import type nodeCrypto from "node:crypto";
import type { Backend } from "../repo/backend.ts";
import { importTokenPublicKey } from "../protocol/token.ts";
import { DataApiError, type RepositoryResolver } from "./data_api.ts";
import { type Logger, messageOf } from "./log.ts";
import {
  classifyStorageError,
  type OpenOptions,
  openTargetStorage,
  type TargetInfo,
  type TargetStorage,
} from "./storage.ts";
import type { TargetRegistry } from "./targets.ts";
import {
  type BesCertificate,
  type CertificateNames,
  defaultCertificateNames,
  ensureCertificate,
} from "./tls.ts";

/** The paths a token may name: `cadres/<policy id>/g<generation>`. */
const REPOSITORY_PATH = /^cadres\/[A-Za-z0-9][A-Za-z0-9_-]{0,127}\/g([1-9]\d{0,8})$/;

/** Resolves tokens' repositories to this BES's targets. */
export function targetRepositoryResolver(
  targets: Pick<TargetRegistry, "find">,
  open: OpenOptions,
): RepositoryResolver {
  const opened = new Map<string, { version: string; storage: Promise<TargetStorage> }>();
  const backends = new Map<string, Backend>();
  const versionOf = (t: TargetInfo) =>
    JSON.stringify([t.updatedAt, t.type, t.config, t.credentials?.username]);
  return async (repo) => {
    const m = REPOSITORY_PATH.exec(repo.path);
    if (!m || Number(m[1]) !== repo.generation) return null;
    let target: TargetInfo | null;
    try {
      target = await targets.find(repo.target);
    } catch (e) {
      throw new DataApiError(
        503,
        "not_ready",
        `This BES could not fetch its storage targets: ${messageOf(e)}`,
      );
    }
    if (!target) return null;
    const version = versionOf(target);
    let entry = opened.get(target.id);
    if (!entry || entry.version !== version) {
      entry = { version, storage: openTargetStorage(target, open) };
      opened.set(target.id, entry);
      for (const key of backends.keys()) if (key.startsWith(`${target.id}\u0000`)) backends.delete(key);
    }
    let storage: TargetStorage;
    try {
      storage = await entry.storage;
    } catch (e) {
      // Not kept: the next request tries again (a target that comes back serves at once).
      if (opened.get(target.id) === entry) opened.delete(target.id);
      const t = classifyStorageError(e, target);
      throw new DataApiError(502, "storage_unavailable", t?.message ?? messageOf(e));
    }
    const key = `${target.id}\u0000${version}\u0000${repo.path}`;
    let backend = backends.get(key);
    if (!backend) backends.set(key, backend = storage.at(repo.path));
    return backend;
  };
}

/** The control plane's token key of a registration reply (parsed once per value); null when it has none. */
export function tokenKeyOf(registration: () => Record<string, unknown>): () => nodeCrypto.KeyObject | null {
  let raw: string | null = null;
  let key: nodeCrypto.KeyObject | null = null;
  return () => {
    const value = registration().tokenPublicKey;
    if (typeof value !== "string") return null;
    if (value !== raw) {
      key = importTokenPublicKey(value);
      raw = value;
    }
    return key;
  };
}

/** How often the certificate is checked for renewal. */
export const CERTIFICATE_CHECK_MS = 24 * 3600_000;

/** The BES's certificate: created or renewed in the data folder, with a callback when it changes. */
export class CertificateKeeper {
  #current: BesCertificate | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;
  #checking: Promise<BesCertificate | null> | null = null;

  constructor(
    readonly dataDir: string,
    readonly log: Logger,
    readonly names: () => CertificateNames = defaultCertificateNames,
    readonly now: () => Date = () => new Date(),
  ) {}

  /** The certificate served now. Throws before `start`. */
  get current(): BesCertificate {
    if (!this.#current) throw new Error("The certificate is not loaded yet");
    return this.#current;
  }

  /** Loads, creates or renews the certificate now. */
  async start(): Promise<BesCertificate> {
    const ensured = await ensureCertificate(this.dataDir, { names: this.names(), now: this.now() });
    this.#current = ensured.certificate;
    this.#logChange(ensured.action, ensured.reason);
    return ensured.certificate;
  }

  #logChange(action: "created" | "renewed" | null, reason: string | null): void {
    const c = this.#current!;
    const fields = { fingerprint: c.fingerprint, notAfter: c.notAfter.toISOString(), names: c.names };
    if (action === "created") this.log.log("info", "created the data API certificate", fields);
    else if (action === "renewed") {
      this.log.log("info", "renewed the data API certificate", { ...fields, reason });
    }
  }

  /**
   * Renews the certificate when due (`renewalReason`): returns the new one (already stored), or null when
   * the current one stays. A failure is logged and the current one stays (checked again next time).
   */
  check(): Promise<BesCertificate | null> {
    this.#checking ??= (async () => {
      try {
        const ensured = await ensureCertificate(this.dataDir, { names: this.names(), now: this.now() });
        if (ensured.action === null) return null;
        this.#current = ensured.certificate;
        this.#logChange(ensured.action, ensured.reason);
        return ensured.certificate;
      } catch (e) {
        this.log.log("error", "could not renew the data API certificate", { error: messageOf(e) });
        return null;
      } finally {
        this.#checking = null;
      }
    })();
    return this.#checking;
  }

  /** Checks every `everyMs` (default daily), calling `onRenewed` with each new certificate. */
  schedule(onRenewed: (cert: BesCertificate) => Promise<void>, everyMs = CERTIFICATE_CHECK_MS): void {
    this.stop();
    this.#timer = setInterval(async () => {
      const renewed = await this.check();
      if (renewed) {
        await onRenewed(renewed).catch((e) =>
          this.log.log("error", "serving the renewed certificate failed", { error: messageOf(e) })
        );
      }
    }, everyMs);
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}
