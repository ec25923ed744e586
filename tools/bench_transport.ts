/**
 * The data API's transport alone (docs/performance.md "End-to-end path"): PUTs of 16 MiB bodies (a pack)
 * from `fetch` to a `Deno.serve` over loopback TLS with a certificate made as the BES makes its own, the
 * server reading and dropping each body. Compares HTTP/2 (fetch's default when the server offers it) with
 * HTTP/1.1, a body given as one buffer with one given as a stream of 1 MiB pieces, and uploads in flight.
 *
 *   deno run -A tools/bench_transport.ts bytes|stream CONCURRENCY [h1]
 */
import process from "node:process";
import { createCertificate } from "../engine/bes/tls.ts";

const cert = await createCertificate({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
const mode = Deno.args[0] ?? "bytes";
const conc = Number(Deno.args[1] ?? 1);
const h1 = Deno.args[2] === "h1";
let got = 0;
let pieces = 0;
const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, cert: cert.certPem, key: cert.keyPem, onListen() {} },
  async (req) => {
    const r = req.body!.getReader();
    for (;;) {
      const { done, value } = await r.read();
      if (done) break;
      got += value.length;
      pieces++;
    }
    return new Response("ok");
  },
);
const client = Deno.createHttpClient({ caCerts: [cert.certPem], ...(h1 ? { http2: false } : {}) });
const SIZE = 16 << 20, N = 24;
const data = crypto.getRandomValues(new Uint8Array(1 << 16));
const pack = new Uint8Array(SIZE);
for (let o = 0; o < SIZE; o += data.length) pack.set(data, o);
const url = `https://127.0.0.1:${server.addr.port}/x`;
const c0 = process.cpuUsage();
const t0 = performance.now();
let next = 0;
await Promise.all(Array.from({ length: conc }, async () => {
  while (next++ < N) {
    let body: BodyInit;
    if (mode === "stream") {
      let o = 0;
      body = new ReadableStream({
        pull(c) {
          if (o >= SIZE) return c.close();
          c.enqueue(pack.slice(o, o + (1 << 20)));
          o += 1 << 20;
        },
      });
    } else body = pack;
    const res = await fetch(url, { method: "PUT", body, client });
    await res.text();
  }
}));
const ms = performance.now() - t0;
const cpu = process.cpuUsage(c0);
console.log(
  `${mode} in flight ${conc} ${h1 ? "HTTP/1.1" : "HTTP/2"}: ${
    (N * SIZE / 1e6 / (ms / 1000)).toFixed(0)
  } MB/s, ` +
    `CPU user ${(cpu.user / 1e6).toFixed(2)} s system ${(cpu.system / 1e6).toFixed(2)} s, wall ${
      (ms / 1000).toFixed(2)
    } s, ${got >> 20} MiB received in pieces of ${(got / pieces / 1024).toFixed(0)} KiB on average`,
);
client.close();
await server.shutdown();
