/**
 * `/api/v1/anomalies`: the suspicious changes the anomaly guard flagged (domain/anomalies.ts) and their review
 * — approve as an expected change, confirm the incident, release a confirmed incident. Reading needs
 * backup.view, reviewing backup.manage, both in the anomaly's org; each review is audited with its change.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  AnomalyListQuery,
  listAnomalies,
  requireAnomaly,
  type ReviewAction,
  reviewAnomaly,
  ReviewInput,
} from "../domain/anomalies.ts";
import { requires } from "./access.ts";
import { apiRouter, err, Id, jsonBody, ok } from "./api_common.ts";
import { AnomalySchema, page } from "./api_schemas.ts";

/** `/api/v1/anomalies` */
export const apiV1Anomalies = apiRouter();
const Param = z.object({ anomalyId: Id });

apiV1Anomalies.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listAnomalies",
    summary: "Suspicious changes in your scope, newest first; status open = pending or incident",
    tags: ["Anomalies"],
    middleware: [requires("backup.view")] as const,
    request: { query: AnomalyListQuery },
    responses: {
      200: ok("The anomalies (cursor always empty: at most limit, newest first)", page(AnomalySchema)),
      401: err("Not signed in or bad token"),
      403: err("Missing permission"),
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const values = await listAnomalies(c.get("deps").kv, c.get("actor")!, c.req.valid("query"));
    return c.json({ values, cursor: "" }, 200);
  },
);

apiV1Anomalies.openapi(
  createRoute({
    method: "get",
    path: "/{anomalyId}",
    operationId: "getAnomaly",
    summary: "One suspicious change: the figures, each signal against its threshold, and its review",
    tags: ["Anomalies"],
    middleware: [requires("backup.view")] as const,
    request: { params: Param },
    responses: {
      200: ok("The anomaly", AnomalySchema),
      401: err("Not signed in or bad token"),
      403: err("Missing permission"),
      404: err("Not found or outside your scope"),
    },
  }),
  async (c) => {
    return c.json(
      await requireAnomaly(c.get("deps").kv, c.get("actor")!, c.req.valid("param").anomalyId),
      200,
    );
  },
);

const ACTIONS: Array<{ action: ReviewAction; segment: string; summary: string; conflict: string }> = [
  {
    action: "approve",
    segment: "approve",
    summary:
      'Approve a pending suspicious change as expected (confirm with {"confirm": true}): the baseline accepts ' +
      "its figures and the host's prune unfreezes when nothing else of it is under review",
    conflict: "Already reviewed",
  },
  {
    action: "incident",
    segment: "confirm-incident",
    summary:
      'Confirm a pending suspicious change as an incident (confirm with {"confirm": true}): prune stays frozen ' +
      "for the host until the incident is released",
    conflict: "Already reviewed",
  },
  {
    action: "release",
    segment: "release",
    summary:
      'Release a confirmed incident (confirm with {"confirm": true}): the host\'s prune unfreezes when nothing ' +
      "else of it is under review",
    conflict: "Not a confirmed incident",
  },
];

for (const a of ACTIONS) {
  apiV1Anomalies.openapi(
    createRoute({
      method: "post",
      path: `/{anomalyId}/${a.segment}`,
      operationId: `${a.action}Anomaly`,
      summary: a.summary,
      tags: ["Anomalies"],
      middleware: [requires("backup.manage")] as const,
      request: { params: Param, ...jsonBody(ReviewInput, { confirm: true, note: "" }) },
      responses: {
        200: ok("The anomaly after the review", AnomalySchema),
        401: err("Not signed in or bad token"),
        403: err("Missing the backup.manage permission"),
        404: err("Not found or outside your scope"),
        409: err(a.conflict),
        422: err("Missing confirmation or note too long"),
      },
    }),
    async (c) => {
      const { kv, clock } = c.get("deps");
      const anomaly = await reviewAnomaly(
        kv,
        c.get("actor")!,
        c.req.valid("param").anomalyId,
        a.action,
        c.req.valid("json"),
        clock(),
      );
      return c.json(anomaly, 200);
    },
  );
}
