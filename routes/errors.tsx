/** Error pages and JSON errors: one mapping (`toErrorStatus`) for every route. */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { z } from "zod";
import { EmptyState, PageHeader } from "../components/ui.tsx";
import { HttpError, toErrorStatus, UnauthorizedError, ValidationError } from "../domain/errors.ts";
import { wantsJson } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors } from "./forms.ts";
import { render } from "./render.tsx";

/** 404 for unknown routes: JSON on the API, a page elsewhere. */
export function notFound(c: Context<AppEnv>) {
  if (wantsJson(c)) return c.json({ error: { code: "not_found", message: "No such endpoint" } }, 404);
  return render(c, "Not found", <NotFoundPage />, 404);
}

function NotFoundPage() {
  return (
    <>
      <PageHeader title="Not found" />
      <EmptyState title="There is nothing here, or it is outside your organization scope.">
        <a href="/">Go to the dashboard</a>
      </EmptyState>
    </>
  );
}

/** Maps any thrown error to the JSON error shape or an error page; 500s are logged, never leaked. */
export function handleError(error: Error, c: Context<AppEnv>) {
  let { status, code } = toErrorStatus(error);
  let message = error.message;
  let fields: Record<string, string> | undefined;
  if (error instanceof z.ZodError) {
    status = 422;
    code = "invalid";
    message = "The request is invalid";
    fields = fieldErrors(error);
  } else if (error instanceof ValidationError) {
    fields = error.fields;
  } else if (error instanceof HTTPException) {
    status = error.status;
    code = status === 400 ? "malformed" : status === 413 ? "payload_too_large" : "http_error";
    message = status === 400 ? "The request body is not valid JSON" : error.message;
  } else if (error instanceof SyntaxError && status === 500) {
    status = 400;
    code = "malformed";
    message = "The request body is not valid JSON";
  }
  if (status === 500) {
    c.get("deps")?.logger.log("error", "unhandled error", {
      requestId: c.get("requestId"),
      route: c.req.routePath,
      error: String(error?.stack ?? error),
    });
    message = "Something went wrong on our side. The error was logged with request id " + c.get("requestId");
  }
  if (error instanceof HttpError && status === 413) c.header("Connection", "close");
  if (wantsJson(c)) {
    return c.json({ error: { code, message, ...(fields ? { fields } : {}) } }, status as 400);
  }
  if (error instanceof UnauthorizedError) {
    const next = c.req.method === "GET" ? `?next=${encodeURIComponent(c.req.path)}` : "";
    return c.redirect(`/login${next}`, 302);
  }
  const title = status === 403
    ? "Not allowed"
    : status === 404
    ? "Not found"
    : status === 413
    ? "Too large"
    : "Error";
  return render(
    c,
    title,
    (
      <>
        <PageHeader title={title} />
        <div class="empty">
          <p class="empty-title" data-testid="error-message">{message}</p>
          <p class="empty-body">
            <a href="/">Back to the dashboard</a>
          </p>
        </div>
      </>
    ),
    status as 400,
  );
}
