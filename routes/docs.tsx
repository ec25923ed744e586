/** The OpenAPI document and a server-rendered API reference built from it. */
import { Hono } from "hono";
import { PageHeader } from "../components/ui.tsx";
import { publicAccess } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { render } from "./render.tsx";

type OpenApiDoc = {
  info: { title: string; version: string; description?: string };
  // deno-lint-ignore no-explicit-any
  paths?: Record<string, any>;
};

const METHODS = ["get", "post", "put", "patch", "delete"] as const;

/** Routes serving `doc()` as JSON and as a readable reference page. */
export function docsRoutes(doc: () => OpenApiDoc) {
  const routes = new Hono<AppEnv>();
  routes.get("/api/openapi.json", publicAccess(), (c) => c.json(doc()));
  routes.get("/api/docs", publicAccess(), (c) => {
    const d = doc();
    const ops = Object.entries(d.paths ?? {}).flatMap(([path, item]) =>
      METHODS.filter((m) => item[m]).map((m) => ({ path, method: m, op: item[m] }))
    );
    const tags = [...new Set(ops.map((o) => o.op.tags?.[0] ?? "Other"))];
    return render(
      c,
      "API reference",
      (
        <>
          <PageHeader
            title={`${d.info.title} ${d.info.version}`}
            subtitle="Send an API token as Authorization: Bearer <token>. Errors are {error: {code, message}}."
            actions={<a class="btn" href="/api/openapi.json">openapi.json</a>}
          />
          {tags.map((tag) => (
            <section class="panel" key={tag}>
              <h2>{tag}</h2>
              {ops.filter((o) => (o.op.tags?.[0] ?? "Other") === tag).map((o) => (
                <details
                  class="api-op"
                  key={o.method + o.path}
                  id={o.op.operationId ? `op-${o.op.operationId}` : undefined}
                >
                  <summary>
                    <span class={`method method--${o.method}`}>{o.method.toUpperCase()}</span>{" "}
                    <code>{o.path}</code> <span class="muted">{o.op.summary}</span>
                  </summary>
                  {o.op.operationId && (
                    <p>
                      operationId <code>{o.op.operationId}</code>
                    </p>
                  )}
                  {o.op.description && <p>{o.op.description}</p>}
                  {o.op.parameters?.length > 0 && (
                    <table class="table table--compact">
                      <thead>
                        <tr>
                          <th>Parameter</th>
                          <th>In</th>
                          <th>Required</th>
                          <th>Schema</th>
                        </tr>
                      </thead>
                      <tbody>
                        {o.op.parameters.map((
                          p: { name: string; in: string; required?: boolean; schema?: unknown },
                        ) => (
                          <tr key={p.in + p.name}>
                            <td>
                              <code>{p.name}</code>
                            </td>
                            <td>{p.in}</td>
                            <td>{p.required ? "yes" : "no"}</td>
                            <td>
                              <code>{JSON.stringify(p.schema)}</code>
                            </td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  )}
                  {o.op.requestBody && (
                    <>
                      <h3>Request body</h3>
                      <pre>{JSON.stringify(o.op.requestBody.content?.["application/json"]?.schema, null, 2)}</pre>
                      {o.op.requestBody.content?.["application/json"]?.example !== undefined && (
                        <>
                          <h3>Example</h3>
                          <pre>{JSON.stringify(o.op.requestBody.content["application/json"].example, null, 2)}</pre>
                        </>
                      )}
                    </>
                  )}
                  <h3>Responses</h3>
                  <ul>
                    {Object.entries(o.op.responses ?? {}).map(([status, r]) => {
                      const schema = (r as { content?: Record<string, { schema?: { $ref?: string } }> })
                        .content?.["application/json"]?.schema;
                      return (
                        <li key={status}>
                          <code>{status}</code> {(r as { description?: string }).description}
                          {schema?.$ref && <span class="muted">({schema.$ref.split("/").pop()})</span>}
                        </li>
                      );
                    })}
                  </ul>
                </details>
              ))}
            </section>
          ))}
        </>
      ),
    );
  });
  return routes;
}
