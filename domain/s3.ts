/** A minimal S3-compatible client (SigV4 via aws4fetch): put an object, probe a bucket. */
import { AwsClient } from "aws4fetch";

export interface S3Location {
  endpoint: string;
  bucket: string;
  region: string;
  prefix: string;
  accessKeyId: string;
  secretAccessKey: string;
}

function client(loc: S3Location): AwsClient {
  return new AwsClient({
    accessKeyId: loc.accessKeyId,
    secretAccessKey: loc.secretAccessKey,
    region: loc.region,
    service: "s3",
    retries: 0,
  });
}

function objectUrl(loc: S3Location, name: string): string {
  const prefix = loc.prefix ? `${loc.prefix.replace(/\/+$/, "")}/` : "";
  return `${loc.endpoint.replace(/\/+$/, "")}/${loc.bucket}/${prefix}${encodeURIComponent(name)}`;
}

/** Uploads bytes as `<prefix>/<name>` (path-style). Throws with the S3 error on failure. */
export async function putObject(
  loc: S3Location,
  name: string,
  body: Uint8Array,
  timeoutMs = 60_000,
): Promise<void> {
  const res = await client(loc).fetch(objectUrl(loc, name), {
    method: "PUT",
    body: body as BodyInit,
    signal: AbortSignal.timeout(timeoutMs),
  }).catch((e) => {
    throw new Error(`S3 copy to ${loc.endpoint} bucket ${loc.bucket} failed: ${describeError(e)}`);
  });
  const text = await res.text();
  if (!res.ok) {
    throw new Error(
      `S3 copy to ${loc.endpoint} bucket ${loc.bucket} answered ${res.status}: ${text.slice(0, 200)}`,
    );
  }
}

/** Checks the bucket answers (HEAD) within `timeoutMs`. Never throws. */
export async function probeBucket(
  loc: S3Location,
  timeoutMs = 5000,
): Promise<{ reachable: boolean; error: string | null; latencyMs: number }> {
  const started = performance.now();
  try {
    const res = await client(loc).fetch(`${loc.endpoint.replace(/\/+$/, "")}/${loc.bucket}`, {
      method: "HEAD",
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body?.cancel();
    const latencyMs = Math.round(performance.now() - started);
    return res.ok
      ? { reachable: true, error: null, latencyMs }
      : { reachable: false, error: `HEAD bucket answered ${res.status}`, latencyMs };
  } catch (e) {
    return {
      reachable: false,
      error: (e as Error).message,
      latencyMs: Math.round(performance.now() - started),
    };
  }
}

/** An error's message with its cause (fetch puts the network reason there). */
function describeError(e: unknown): string {
  const err = e as Error & { cause?: { message?: string } };
  return err.cause?.message ? `${err.message} (${err.cause.message})` : err.message;
}
