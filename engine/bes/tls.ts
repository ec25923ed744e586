/**
 * The BES's TLS certificate (ENGINE.md §5): self-signed, created on first start and kept in the BES's
 * data folder, not a CA (`CA:FALSE` — Deno refuses a self-signed CA certificate as a server's), with the
 * BES's host names and IP addresses (127.0.0.1 and ::1 always) as subject alternative names (Deno
 * checks an IP address only against an IP SAN), ECDSA P-256. Agents pin it: job payloads carry the PEM
 * and they fetch through `Deno.createHttpClient({ caCerts: [pem] })`. It is renewed before it expires
 * or when the names it must carry change; the BES then re-reports it through its heartbeat.
 */
// @peculiar/x509 resolves its parts through tsyringe, which needs the Reflect metadata polyfill loaded first.
import "reflect-metadata";
import nodeCrypto from "node:crypto";
import * as x509 from "@peculiar/x509";

/** Folder of the certificate files inside the BES data folder. */
export const TLS_DIR = "tls";
/** The certificate (PEM): what the BES reports and agents pin. */
export const CERT_FILE = `${TLS_DIR}/cert.pem`;
/** The private key (PKCS#8 PEM, mode 0600). */
export const KEY_FILE = `${TLS_DIR}/key.pem`;
/** Lifetime of a new certificate. */
export const CERT_VALIDITY_DAYS = 365;
/** A certificate is renewed when less than this is left of it. */
export const RENEW_BEFORE_DAYS = 30;
const DAY_MS = 24 * 60 * 60_000;
const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/** The names a certificate must carry. */
export interface CertificateNames {
  /** DNS names (the host name, "localhost"). */
  dnsNames: string[];
  /** IPv4 and IPv6 addresses. */
  ipAddresses: string[];
}

/** A certificate and its key, as Deno.serve takes them. */
export interface BesCertificate {
  certPem: string;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
  names: CertificateNames;
  /** SHA-256 of the DER certificate, hex (for logs and the operator; agents pin the PEM itself). */
  fingerprint: string;
}

/**
 * The names of this machine: its host name and "localhost", and every address of its network
 * interfaces except link-local ones, plus 127.0.0.1 and ::1. Needs `--allow-sys`.
 */
export function defaultCertificateNames(): CertificateNames {
  const dns = new Set(["localhost"]);
  const host = Deno.hostname();
  if (isDnsName(host)) dns.add(host.toLowerCase());
  const ips = new Set(["127.0.0.1", "::1"]);
  for (const i of Deno.networkInterfaces()) {
    if (i.family === "IPv6" && i.address.toLowerCase().startsWith("fe80:")) continue;
    if (i.family === "IPv4" && i.address.startsWith("169.254.")) continue;
    ips.add(i.address);
  }
  return { dnsNames: [...dns], ipAddresses: [...ips] };
}

function isDnsName(name: string): boolean {
  return /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(name);
}

function normalizeNames(names: CertificateNames): CertificateNames {
  const dns = new Set(names.dnsNames.map((n) => n.toLowerCase()));
  for (const n of dns) {
    if (!isDnsName(n)) throw new Error(`Cannot put "${n}" in a certificate: not a DNS name`);
  }
  const ips = new Set(["127.0.0.1", ...names.ipAddresses.map(normalizeIp)]);
  return { dnsNames: [...dns].sort(), ipAddresses: [...ips].sort() };
}

function normalizeIp(ip: string): string {
  const family = nodeIsIp(ip);
  if (family === 0) throw new Error(`Cannot put "${ip}" in a certificate: not an IP address`);
  // Node's URL parser writes IPv6 addresses in their canonical compressed form.
  return family === 6 ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip;
}

function nodeIsIp(ip: string): 0 | 4 | 6 {
  if (/^(\d{1,3})(\.\d{1,3}){3}$/.test(ip) && ip.split(".").every((p) => Number(p) <= 255)) return 4;
  try {
    new URL(`http://[${ip}]/`);
    return 6;
  } catch {
    return 0;
  }
}

/** A new self-signed certificate for `names`, valid from `now` (minus a minute of clock skew). */
export async function createCertificate(names: CertificateNames, now = new Date()): Promise<BesCertificate> {
  const n = normalizeNames(names);
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]) as CryptoKeyPair;
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] &= 0x7f; // a positive serial number
  const notBefore = new Date(Math.floor((now.getTime() - 60_000) / 1000) * 1000);
  const notAfter = new Date(notBefore.getTime() + CERT_VALIDITY_DAYS * DAY_MS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.toHex(),
    name: `CN=${n.dnsNames.find((d) => d !== "localhost") ?? "cadres-bes"}, O=Cadres Backup BES`,
    notBefore,
    notAfter,
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...n.dnsNames.map((value) => ({ type: "dns" as const, value })),
        ...n.ipAddresses.map((value) => ({ type: "ip" as const, value })),
      ]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  return {
    certPem: cert.toString("pem") + "\n",
    keyPem: x509.PemConverter.encode(pkcs8, "PRIVATE KEY") + "\n",
    notBefore,
    notAfter,
    names: n,
    fingerprint: nodeCrypto.createHash("sha256").update(new Uint8Array(cert.rawData)).digest("hex"),
  };
}

/**
 * The certificate in `certPem` with key `keyPem`. Throws if either does not parse, the certificate is
 * a CA, or the key is not the certificate's.
 */
export function parseCertificate(certPem: string, keyPem: string): BesCertificate {
  const cert = new x509.X509Certificate(certPem);
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (!basic || basic.ca) throw new Error("The certificate is a CA certificate or has no basic constraints");
  const certSpki = new Uint8Array(cert.publicKey.rawData);
  const keySpki = nodeCrypto.createPublicKey(nodeCrypto.createPrivateKey(keyPem)).export({
    format: "der",
    type: "spki",
  });
  if (!nodeCrypto.timingSafeEqual(certSpki, new Uint8Array(keySpki))) {
    throw new Error("The private key does not belong to the certificate");
  }
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const name of san?.names.items ?? []) {
    if (name.type === "dns") dnsNames.push(name.value.toLowerCase());
    if (name.type === "ip") ipAddresses.push(normalizeIp(name.value));
  }
  return {
    certPem,
    keyPem,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    names: { dnsNames: dnsNames.sort(), ipAddresses: ipAddresses.sort() },
    fingerprint: nodeCrypto.createHash("sha256").update(new Uint8Array(cert.rawData)).digest("hex"),
  };
}

/**
 * Why `cert` must be replaced at `now` for `names`, or null: it expires within `RENEW_BEFORE_DAYS`, is
 * not yet valid, or lacks one of the names.
 */
export function renewalReason(
  cert: BesCertificate,
  names: CertificateNames,
  now = new Date(),
): string | null {
  if (cert.notAfter.getTime() - now.getTime() < RENEW_BEFORE_DAYS * DAY_MS) {
    return `it expires ${cert.notAfter.toISOString()}`;
  }
  if (cert.notBefore.getTime() > now.getTime()) {
    return `it is not valid before ${cert.notBefore.toISOString()}`;
  }
  const n = normalizeNames(names);
  const missing = [
    ...n.dnsNames.filter((d) => !cert.names.dnsNames.includes(d)),
    ...n.ipAddresses.filter((i) => !cert.names.ipAddresses.includes(i)),
  ];
  return missing.length > 0 ? `it does not name ${missing.join(", ")}` : null;
}

/** The certificate kept in `dataDir`, or null when there is none (or it is unreadable: `error` says why). */
export async function loadCertificate(
  dataDir: string,
): Promise<{ certificate: BesCertificate | null; error: string | null }> {
  let certPem: string;
  let keyPem: string;
  try {
    certPem = await Deno.readTextFile(`${dataDir}/${CERT_FILE}`);
    keyPem = await Deno.readTextFile(`${dataDir}/${KEY_FILE}`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { certificate: null, error: null };
    throw e;
  }
  try {
    return { certificate: parseCertificate(certPem, keyPem), error: null };
  } catch (e) {
    return { certificate: null, error: (e as Error).message };
  }
}

async function writeAtomically(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode });
    try {
      await f.write(new TextEncoder().encode(text));
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Stores `cert` in `dataDir` (key mode 0600). The key is replaced first; a crash between the two
 * leaves a pair that `loadCertificate` refuses (key and certificate differ), so a new one is made. */
export async function saveCertificate(dataDir: string, cert: BesCertificate): Promise<void> {
  await Deno.mkdir(`${dataDir}/${TLS_DIR}`, { recursive: true, mode: 0o700 });
  await writeAtomically(`${dataDir}/${KEY_FILE}`, cert.keyPem, 0o600);
  await writeAtomically(`${dataDir}/${CERT_FILE}`, cert.certPem, 0o644);
}

/** What `ensureCertificate` did. */
export interface EnsuredCertificate {
  certificate: BesCertificate;
  /** "created" on first start, "renewed" when replaced, null when the kept one is still good. */
  action: "created" | "renewed" | null;
  /** Why it was renewed (or why the kept one could not be used). */
  reason: string | null;
}

/**
 * The BES's certificate: the one kept in `dataDir` while it is good for `names` (default: this machine's,
 * `defaultCertificateNames()`), else a new one, stored before it is returned. Call it at start and
 * periodically (daily); when `action` is not null, serve and report the new certificate.
 */
export async function ensureCertificate(
  dataDir: string,
  options: { names?: CertificateNames; now?: Date } = {},
): Promise<EnsuredCertificate> {
  const names = options.names ?? defaultCertificateNames();
  const now = options.now ?? new Date();
  const { certificate: kept, error } = await loadCertificate(dataDir);
  let reason: string | null = error ? `the kept certificate is unusable: ${error}` : null;
  if (kept) {
    reason = renewalReason(kept, names, now);
    if (reason === null) return { certificate: kept, action: null, reason: null };
  }
  const fresh = await createCertificate(names, now);
  await saveCertificate(dataDir, fresh);
  return { certificate: fresh, action: kept || error ? "renewed" : "created", reason };
}
