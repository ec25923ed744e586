/**
 * The BES data API's address and TLS certificate (ENGINE.md §5). A BES reports both in its signed
 * registration (the certificate again in heartbeats when it renews it); agents get them with every job
 * and trust exactly that certificate (`Deno.createHttpClient({ caCerts: [pem] })`). What is checked here:
 * one PEM certificate of at most 16 KiB that parses as X.509, is not a CA (`CA:FALSE`; Deno refuses a
 * self-signed CA as a server certificate) and names the data URL's host among its subject alternative
 * names; at registration and heartbeat also that it has not expired. Plain HTTP only on loopback.
 */
import { X509Certificate } from "node:crypto";
import { z } from "zod";

export const MAX_CERTIFICATE_BYTES = 16 * 1024;

/** What the control plane keeps about a BES's data API certificate besides the PEM. */
export interface CertificateInfo {
  /** SHA-256 of the DER, lowercase hex (shown to operators to compare with the BES's). */
  sha256: string;
  /** `notAfter`, ISO 8601. */
  expiresAt: string;
}

const PEM = /^-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?$/;
const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/** The host of a URL without IPv6 brackets. */
export function urlHost(url: string): string {
  return new URL(url).hostname.replace(/^\[(.*)\]$/, "$1");
}

function isIp(host: string): boolean {
  return z.ipv4().safeParse(host).success || z.ipv6().safeParse(host).success;
}

/** The data API URL: `https://host[:port][/path]`, or `http://` on a loopback host only. */
export const DataUrl = z.string().trim().max(2048, "must be at most 2048 characters").superRefine(
  (v, ctx) => {
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      ctx.addIssue({ code: "custom", message: "must be an absolute https:// URL" });
      return;
    }
    if (url.username || url.password || url.search || url.hash) {
      ctx.addIssue({ code: "custom", message: "must not carry credentials, a query or a fragment" });
    } else if (url.protocol === "http:" && !LOOPBACK.has(urlHost(v))) {
      ctx.addIssue({ code: "custom", message: "must use https:// (plain http only on a loopback address)" });
    } else if (url.protocol !== "https:" && url.protocol !== "http:") {
      ctx.addIssue({ code: "custom", message: "must be an absolute https:// URL" });
    }
  },
).transform((v) => v.replace(/\/+$/, ""));

/** A PEM certificate's shape and size (parsing comes in `inspectCertificate`). */
export const CertificatePem = z.string().max(MAX_CERTIFICATE_BYTES, "must be at most 16 KiB").regex(
  PEM,
  "must be one PEM certificate (-----BEGIN CERTIFICATE----- …)",
);

/**
 * Parses `pem` and checks it can serve `dataUrl` (when given): not a CA, the URL's host among its
 * names, and, with `now`, not expired. Throws `Error` with a reason fit for a field message.
 */
export function inspectCertificate(pem: string, dataUrl: string | null, now?: Date): CertificateInfo {
  if (pem.length > MAX_CERTIFICATE_BYTES || !PEM.test(pem)) {
    throw new Error("must be one PEM certificate (-----BEGIN CERTIFICATE----- …) of at most 16 KiB");
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    throw new Error("is not a readable X.509 certificate");
  }
  if (cert.ca) throw new Error("must not be a CA certificate (it must say CA:FALSE)");
  if (dataUrl) {
    const host = urlHost(dataUrl);
    const named = isIp(host) ? cert.checkIP(host) !== undefined : cert.checkHost(host) !== undefined;
    if (!named) throw new Error(`does not name ${host} (the data URL's host) as a subject alternative name`);
  }
  const expires = new Date(cert.validTo);
  if (Number.isNaN(expires.getTime())) throw new Error("has no readable expiry date");
  if (now && expires.getTime() <= now.getTime()) {
    throw new Error(`expired on ${expires.toISOString()}; renew it before reporting it`);
  }
  return { sha256: cert.fingerprint256.replaceAll(":", "").toLowerCase(), expiresAt: expires.toISOString() };
}
