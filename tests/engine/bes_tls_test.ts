import assert from "node:assert/strict";
import nodeCrypto from "node:crypto";
import {
  CERT_FILE,
  createCertificate,
  ensureCertificate,
  KEY_FILE,
  loadCertificate,
  renewalReason,
} from "../../engine/bes/tls.ts";
import { tempDir } from "./helpers.ts";

const NAMES = { dnsNames: ["bes-test.example", "localhost"], ipAddresses: ["127.0.0.1", "::1", "10.1.2.3"] };

Deno.test("createCertificate() makes a certificate Deno serves and a pinned client trusts; an unpinned one refuses", async () => {
  const cert = await createCertificate(NAMES);
  const x = new nodeCrypto.X509Certificate(cert.certPem);
  assert.equal(x.ca, false);
  assert.match(x.subjectAltName ?? "", /DNS:bes-test\.example/);
  assert.match(x.subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
  assert.match(x.subjectAltName ?? "", /IP Address:10\.1\.2\.3/);
  assert.equal(x.publicKey.asymmetricKeyType, "ec");
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert: cert.certPem, key: cert.keyPem, onListen() {} },
    () => new Response("pinned"),
  );
  const client = Deno.createHttpClient({ caCerts: [cert.certPem] });
  try {
    const res = await fetch(`https://127.0.0.1:${server.addr.port}/`, { client });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "pinned");
    await assert.rejects(() => fetch(`https://127.0.0.1:${server.addr.port}/`));
    const other = await createCertificate(NAMES);
    const wrong = Deno.createHttpClient({ caCerts: [other.certPem] });
    try {
      await assert.rejects(() => fetch(`https://127.0.0.1:${server.addr.port}/`, { client: wrong }));
    } finally {
      wrong.close();
    }
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("ensureCertificate() creates once, keeps it, and renews it before expiry or when a name is missing", async () => {
  await using dir = await tempDir();
  const t0 = new Date("2027-01-10T00:00:00Z");
  const first = await ensureCertificate(dir.path, { names: NAMES, now: t0 });
  assert.equal(first.action, "created");
  assert.equal((await Deno.stat(`${dir.path}/${KEY_FILE}`)).mode! & 0o777, 0o600);
  const again = await ensureCertificate(dir.path, { names: NAMES, now: new Date("2027-06-01T00:00:00Z") });
  assert.equal(again.action, null);
  assert.equal(again.certificate.certPem, first.certificate.certPem);

  const late = new Date(first.certificate.notAfter.getTime() - 10 * 24 * 60 * 60_000);
  assert.match(renewalReason(first.certificate, NAMES, late) ?? "", /expires/);
  const renewed = await ensureCertificate(dir.path, { names: NAMES, now: late });
  assert.equal(renewed.action, "renewed");
  assert.notEqual(renewed.certificate.certPem, first.certificate.certPem);
  assert.ok(renewed.certificate.notAfter > first.certificate.notAfter);
  assert.equal((await loadCertificate(dir.path)).certificate?.certPem, renewed.certificate.certPem);

  const moved = { ...NAMES, ipAddresses: [...NAMES.ipAddresses, "192.168.7.9"] };
  const byName = await ensureCertificate(dir.path, { names: moved, now: late });
  assert.equal(byName.action, "renewed");
  assert.match(byName.reason ?? "", /192\.168\.7\.9/);
  assert.ok(byName.certificate.names.ipAddresses.includes("192.168.7.9"));
});

Deno.test("ensureCertificate() replaces a kept pair whose key is not the certificate's", async () => {
  await using dir = await tempDir();
  const first = await ensureCertificate(dir.path, { names: NAMES });
  const stranger = await createCertificate(NAMES);
  await Deno.writeTextFile(`${dir.path}/${KEY_FILE}`, stranger.keyPem);
  assert.match((await loadCertificate(dir.path)).error ?? "", /does not belong/);
  const fixed = await ensureCertificate(dir.path, { names: NAMES });
  assert.equal(fixed.action, "renewed");
  assert.notEqual(fixed.certificate.certPem, first.certificate.certPem);
  assert.equal(await Deno.readTextFile(`${dir.path}/${CERT_FILE}`), fixed.certificate.certPem);
});
