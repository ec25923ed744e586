/**
 * A minimal SMTP client (RFC 5321) for notification email: EHLO, optional STARTTLS or implicit TLS,
 * AUTH PLAIN/LOGIN, one message to several recipients. The connection is injectable (`SmtpConnector`)
 * so tests can talk to a real server on loopback with their own CA. The server's replies reach delivery
 * errors only scrubbed of the password (domain/scrub.ts: a server that echoes `AUTH PLAIN <base64>`).
 */
import { SecretScrubber } from "./scrub.ts";

export const SMTP_TLS_MODES = ["none", "starttls", "tls"] as const;
export type SmtpTlsMode = (typeof SMTP_TLS_MODES)[number];

/** Opens connections for the client; the default uses Deno's TCP and TLS. */
export interface SmtpConnector {
  connect(options: { hostname: string; port: number; tls: boolean }): Promise<Deno.Conn>;
  startTls(conn: Deno.Conn, hostname: string): Promise<Deno.Conn>;
}

/** A connector over `Deno.connect`/`Deno.connectTls`, trusting `caCerts` in addition to the system roots. */
export function smtpConnector(options: { caCerts?: string[] } = {}): SmtpConnector {
  const tls = options.caCerts ? { caCerts: options.caCerts } : {};
  return {
    async connect({ hostname, port, tls: implicit }) {
      return implicit
        ? await Deno.connectTls({ hostname, port, ...tls })
        : await Deno.connect({ hostname, port, transport: "tcp" });
    },
    async startTls(conn, hostname) {
      return await Deno.startTls(conn as Deno.TcpConn, { hostname, ...tls });
    },
  };
}

export interface SmtpServerOptions {
  host: string;
  port: number;
  tlsMode: SmtpTlsMode;
  username?: string;
  password?: string;
  /** The name sent with EHLO. */
  heloName?: string;
  /** Whole-session deadline; the connection is closed when it passes. */
  timeoutMs?: number;
  connector?: SmtpConnector;
}

export interface SmtpMessage {
  from: string;
  to: string[];
  subject: string;
  text: string;
  date: Date;
  messageId: string;
}

/** A reply that ended the session, or a transport failure; `reply` is the server's last line, if any. */
export class SmtpError extends Error {
  override name = "SmtpError";
  constructor(message: string, readonly reply: string | null = null) {
    super(message);
  }
}

interface Reply {
  code: number;
  lines: string[];
}

function replyText(reply: Reply): string {
  return reply.lines.at(-1)?.slice(0, 300) ?? "";
}

/** Reads CRLF-terminated replies from a connection; multi-line replies (`250-…`) are joined. */
class ReplyReader {
  #buffer = "";
  #decoder = new TextDecoder();
  constructor(readonly conn: Deno.Conn) {}

  async #line(): Promise<string> {
    const chunk = new Uint8Array(4096);
    while (true) {
      const end = this.#buffer.indexOf("\n");
      if (end >= 0) {
        const line = this.#buffer.slice(0, end).replace(/\r$/, "");
        this.#buffer = this.#buffer.slice(end + 1);
        return line;
      }
      if (this.#buffer.length > 64 * 1024) {
        throw new SmtpError("The SMTP server sent a line that is too long");
      }
      const n = await this.conn.read(chunk);
      if (n === null) throw new SmtpError("The SMTP server closed the connection");
      this.#buffer += this.#decoder.decode(chunk.subarray(0, n), { stream: true });
    }
  }

  async read(): Promise<Reply> {
    const lines: string[] = [];
    while (true) {
      const line = await this.#line();
      if (!/^\d{3}([ -]|$)/.test(line)) throw new SmtpError("The server does not speak SMTP", line);
      lines.push(line);
      if (line[3] !== "-") return { code: Number(line.slice(0, 3)), lines };
      if (lines.length > 200) throw new SmtpError("The SMTP server sent too many reply lines");
    }
  }

  /** True when bytes were received that nobody asked for (refused before a TLS upgrade). */
  get pending(): boolean {
    return this.#buffer.length > 0;
  }
}

class Session {
  #reader: ReplyReader;
  #encoder = new TextEncoder();
  constructor(public conn: Deno.Conn) {
    this.#reader = new ReplyReader(conn);
  }

  async write(data: string): Promise<void> {
    const bytes = this.#encoder.encode(data);
    let written = 0;
    while (written < bytes.length) written += await this.conn.write(bytes.subarray(written));
  }

  async read(): Promise<Reply> {
    return await this.#reader.read();
  }

  /** Sends a command and expects one of `codes`; `shown` replaces the command in errors (credentials). */
  async command(line: string, codes: number[], shown = line): Promise<Reply> {
    await this.write(line + "\r\n");
    const reply = await this.read();
    if (!codes.includes(reply.code)) {
      throw new SmtpError(`${shown} was refused: ${replyText(reply)}`, replyText(reply));
    }
    return reply;
  }

  upgrade(conn: Deno.Conn): void {
    if (this.#reader.pending) throw new SmtpError("The SMTP server sent data before the TLS handshake");
    this.conn = conn;
    this.#reader = new ReplyReader(conn);
  }
}

function extensions(reply: Reply): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of reply.lines.slice(1)) {
    const [name, ...rest] = line.slice(4).trim().split(/\s+/);
    if (name) out.set(name.toUpperCase(), rest.join(" ").toUpperCase());
  }
  return out;
}

function b64(text: string): string {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** True when the text is 7-bit ASCII. */
function isAscii(text: string): boolean {
  // deno-lint-ignore no-control-regex
  return /^[\x00-\x7f]*$/.test(text);
}

/** An RFC 2047 encoded header value when it is not plain ASCII; CR/LF never reach a header. */
export function encodeHeader(value: string): string {
  const clean = value.replace(/[\r\n]+/g, " ");
  if (isAscii(clean)) return clean;
  const words: string[] = [];
  let current = "";
  for (const ch of clean) {
    if (new TextEncoder().encode(current + ch).length > 45) {
      words.push(current);
      current = "";
    }
    current += ch;
  }
  if (current) words.push(current);
  return words.map((w) => `=?UTF-8?B?${b64(w)}?=`).join("\r\n ");
}

/** The RFC 5322 text of a plain-text message, CRLF line endings, not yet dot-stuffed. */
export function formatMessage(message: SmtpMessage): string {
  const text = message.text.replace(/\r\n|\r|\n/g, "\r\n");
  const simple = isAscii(text) && text.split("\r\n").every((line) => line.length <= 998);
  let body = text;
  if (!simple) {
    const encoded = b64(text);
    body = encoded.match(/.{1,76}/g)?.join("\r\n") ?? "";
  }
  const headers = [
    `From: ${message.from}`,
    `To: ${message.to.join(", ")}`,
    `Subject: ${encodeHeader(message.subject)}`,
    `Date: ${message.date.toUTCString().replace("GMT", "+0000")}`,
    `Message-ID: <${message.messageId}>`,
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    `Content-Transfer-Encoding: ${simple ? "7bit" : "base64"}`,
  ];
  return headers.join("\r\n") + "\r\n\r\n" + body;
}

/** Dot-stuffs message text for DATA and adds the terminating line. */
function dataPayload(text: string): string {
  const stuffed = text.split("\r\n").map((line) => (line.startsWith(".") ? "." + line : line)).join("\r\n");
  return stuffed + (stuffed.endsWith("\r\n") ? "" : "\r\n") + ".\r\n";
}

function describeError(error: unknown, timedOut: boolean, timeoutMs: number): SmtpError {
  if (timedOut) return new SmtpError(`The SMTP session timed out after ${Math.round(timeoutMs / 1000)} s`);
  if (error instanceof SmtpError) return error;
  const text = error instanceof Error ? error.message : String(error);
  return new SmtpError(`SMTP connection failed: ${text.split("\n")[0].slice(0, 300)}`);
}

/**
 * Sends `message` through the server. Returns the server's reply to the end of DATA (e.g. `250 OK:
 * queued`). Throws SmtpError naming the step that failed, with the server's reply when there was one.
 */
export async function sendMail(server: SmtpServerOptions, message: SmtpMessage): Promise<{ reply: string }> {
  const connector = server.connector ?? smtpConnector();
  const timeoutMs = server.timeoutMs ?? 30_000;
  const secrets = new SecretScrubber();
  secrets.add(server.password ?? "", { username: server.username });
  let session: Session | null = null;
  let timedOut = false;
  let expire = () => {};
  const deadline = new Promise<never>((_, reject) => {
    expire = () => reject(new SmtpError("timed out"));
  });
  deadline.catch(() => {});
  const timer = setTimeout(() => {
    timedOut = true;
    expire();
    try {
      session?.conn.close();
    } catch { /* already closed */ }
  }, timeoutMs);
  try {
    const connecting = connector.connect({
      hostname: server.host,
      port: server.port,
      tls: server.tlsMode === "tls",
    });
    // A connect that completes after the deadline must not leak its connection.
    connecting.then((c) => timedOut && c.close(), () => {});
    session = new Session(await Promise.race([connecting, deadline]));
    const greeting = await session.read();
    if (greeting.code !== 220) {
      throw new SmtpError(`The SMTP server refused the session: ${replyText(greeting)}`, replyText(greeting));
    }
    const helo = server.heloName ?? "cadres.localdomain";
    let ehlo = await session.command(`EHLO ${helo}`, [250]);
    if (server.tlsMode === "starttls") {
      if (!extensions(ehlo).has("STARTTLS")) throw new SmtpError("The SMTP server does not offer STARTTLS");
      await session.command("STARTTLS", [220]);
      session.upgrade(await connector.startTls(session.conn, server.host));
      ehlo = await session.command(`EHLO ${helo}`, [250]);
    }
    if (server.username) {
      const mechanisms = (extensions(ehlo).get("AUTH") ?? "").split(/\s+/);
      const password = server.password ?? "";
      if (mechanisms.includes("PLAIN")) {
        await session.command(`AUTH PLAIN ${b64(`\0${server.username}\0${password}`)}`, [235], "AUTH PLAIN");
      } else if (mechanisms.includes("LOGIN")) {
        await session.command("AUTH LOGIN", [334]);
        await session.command(b64(server.username), [334], "AUTH LOGIN username");
        await session.command(b64(password), [235], "AUTH LOGIN password");
      } else {
        throw new SmtpError("The SMTP server offers no AUTH PLAIN or LOGIN on this connection");
      }
    }
    await session.command(`MAIL FROM:<${message.from}>`, [250]);
    for (const to of message.to) await session.command(`RCPT TO:<${to}>`, [250, 251]);
    await session.command("DATA", [354]);
    await session.write(dataPayload(formatMessage(message)));
    const done = await session.read();
    if (done.code !== 250) {
      throw new SmtpError(`The message was refused: ${replyText(done)}`, replyText(done));
    }
    await session.write("QUIT\r\n");
    await session.read().catch(() => null);
    return { reply: secrets.scrub(replyText(done)) };
  } catch (error) {
    const failure = describeError(error, timedOut, timeoutMs);
    throw new SmtpError(
      secrets.scrub(failure.message),
      failure.reply === null ? null : secrets.scrub(failure.reply),
    );
  } finally {
    clearTimeout(timer);
    try {
      session?.conn.close();
    } catch { /* already closed */ }
  }
}
