/**
 * What both fake vendor servers share: a loopback HTTP(S) server started by the test, a request log,
 * and injected faults (a status, headers and body answered instead of the real response, a number of
 * times) — for rate limits, 5xx, auth expiry and malformed bodies.
 */

/** A response the fake answers instead of the real one, `times` times, for requests matching it. */
export interface Fault {
  method?: string;
  /** Exact path, or a RegExp over the path. */
  path: string | RegExp;
  status: number;
  headers?: Record<string, string>;
  /**
   * A JSON value, or a raw string (for bodies that are not JSON), or a function of the request that
   * returns one (a server that echoes what it was sent).
   */
  body?: unknown | ((request: LoggedRequest) => unknown);
  /** Default 1; Infinity for a persistent fault. */
  times?: number;
}

export interface LoggedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  authorization: string | null;
  body: string;
}

/** The base of a fake server: start, stop, log, faults. */
export class FakeServer {
  url = "";
  faults: Fault[] = [];
  requests: LoggedRequest[] = [];
  #server: Deno.HttpServer | null = null;

  /** Starts on 127.0.0.1 with a free port; with `tls`, serves HTTPS with that certificate. */
  async start(handler: (req: Request, logged: LoggedRequest) => Promise<Response> | Response, tls?: {
    cert: string;
    key: string;
  }): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<number>();
    const serve = async (req: Request) => {
      const url = new URL(req.url);
      const body = req.method === "GET" ? "" : await req.text();
      const logged: LoggedRequest = {
        method: req.method,
        path: url.pathname,
        query: url.searchParams,
        authorization: req.headers.get("authorization"),
        body,
      };
      this.requests.push(logged);
      const fault = this.faults.find((f) =>
        (f.times ?? 1) > 0 && (!f.method || f.method === req.method) &&
        (typeof f.path === "string" ? f.path === url.pathname : f.path.test(url.pathname))
      );
      if (fault) {
        fault.times = (fault.times ?? 1) - 1;
        const value = typeof fault.body === "function" ? fault.body(logged) : fault.body;
        const raw = typeof value === "string" ? value : JSON.stringify(value ?? {});
        return new Response(raw, {
          status: fault.status,
          headers: { "content-type": "application/json", ...fault.headers },
        });
      }
      return await handler(req, logged);
    };
    this.#server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: ({ port }) => resolve(port),
      ...(tls ?? {}),
    }, serve);
    const port = await promise;
    this.url = `${tls ? "https" : "http"}://${tls ? "localhost" : "127.0.0.1"}:${port}`;
  }

  async close(): Promise<void> {
    await this.#server?.shutdown();
    this.#server = null;
  }

  async [Symbol.asyncDispose]() {
    await this.close();
  }

  /** Requests to a path (optionally of one method). */
  calls(path: string | RegExp, method?: string): LoggedRequest[] {
    return this.requests.filter((r) =>
      (!method || r.method === method) && (typeof path === "string" ? r.path === path : path.test(r.path))
    );
  }
}

/** A JSON response. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/**
 * A CA and a server certificate for localhost and 127.0.0.1 signed by it, made with openssl in a temp
 * folder; null when openssl is not installed.
 */
export async function makeTestCertificates(): Promise<{ ca: string; cert: string; key: string } | null> {
  const dir = await Deno.makeTempDir({ prefix: "cadres-tls-" });
  const run = async (args: string[]) => {
    const out = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" })
      .output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  };
  try {
    await run([
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "2",
      "-subj",
      "/CN=Cadres Test CA",
    ]);
    await run([
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "server.key",
      "-out",
      "server.csr",
      "-subj",
      "/CN=localhost",
    ]);
    await Deno.writeTextFile(
      `${dir}/ext.cnf`,
      "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    );
    await run([
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "server.pem",
      "-days",
      "2",
      "-extfile",
      "ext.cnf",
    ]);
    return {
      ca: await Deno.readTextFile(`${dir}/ca.pem`),
      cert: await Deno.readTextFile(`${dir}/server.pem`),
      key: await Deno.readTextFile(`${dir}/server.key`),
    };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
