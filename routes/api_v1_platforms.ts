/**
 * `/api/v1/platforms`: third-party platforms as JSON — list, register, get (with its imported jobs),
 * update, delete, test connectivity and sync now. Passwords go to the vault and are never returned.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  createPlatform,
  deletePlatform,
  listPlatformJobs,
  listPlatforms,
  PlatformCreateInput,
  PlatformUpdateInput,
  requirePlatform,
  toPublicPlatform,
  updatePlatform,
} from "../domain/platforms.ts";
import { syncPlatform, testPlatform } from "../domain/platform_sync.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { page, PlatformSchema, SyncReportSchema } from "./api_schemas.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Platform not found or outside your scope"),
};
const PlatformId = z.object({ platformId: z.string().min(1).max(64) });

/** `/api/v1/platforms` */
export const apiV1Platforms = apiRouter();

apiV1Platforms.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listPlatforms",
    summary: "Platforms in your scope with their last sync status and error",
    tags: ["Platforms"],
    middleware: [requires("backup.view")] as const,
    responses: { 200: ok("The platforms", page(PlatformSchema)), 401: common[401], 403: common[403] },
  }),
  async (c) => {
    const values = await listPlatforms(c.get("deps").kv, c.get("actor")!);
    return c.json({ values: values.map(toPublicPlatform), cursor: "" }, 200);
  },
);

apiV1Platforms.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createPlatform",
    summary: "Register a Veeam or Cohesity platform (the password goes to the vault and is never returned)",
    tags: ["Platforms"],
    middleware: [requires("backup.manage")] as const,
    request: jsonBody(PlatformCreateInput, {
      type: "veeam",
      orgId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M",
      name: "VBR London",
      endpointUrl: "https://vbr.acme.example:9419",
      username: "svc-cadres",
      password: "the service account's password",
      syncIntervalMinutes: 60,
    }),
    responses: { 201: ok("Registered", PlatformSchema), 422: err("Invalid input"), ...common },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const platform = await createPlatform(kv, c.get("actor")!, c.req.valid("json"), {
      now: clock(),
      masterKey,
    });
    return c.json(toPublicPlatform(platform), 201);
  },
);

apiV1Platforms.openapi(
  createRoute({
    method: "get",
    path: "/{platformId}",
    operationId: "getPlatform",
    summary: "A platform with its imported jobs",
    tags: ["Platforms"],
    middleware: [requires("backup.view")] as const,
    request: { params: PlatformId },
    responses: {
      200: ok(
        "The platform",
        PlatformSchema.extend({
          jobs: z.array(z.looseObject({ id: z.string(), name: z.string(), vendorJobId: z.string() })),
        }).openapi("PlatformWithJobs"),
      ),
      ...common,
    },
  }),
  async (c) => {
    const { kv } = c.get("deps");
    const platform = await requirePlatform(kv, c.get("actor")!, c.req.valid("param").platformId);
    return c.json({ ...toPublicPlatform(platform), jobs: await listPlatformJobs(kv, platform.id) }, 200);
  },
);

apiV1Platforms.openapi(
  createRoute({
    method: "put",
    path: "/{platformId}",
    operationId: "updatePlatform",
    summary: "Update a platform (type and organization are fixed; a password replaces the stored one)",
    tags: ["Platforms"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: PlatformId,
      ...jsonBody(PlatformUpdateInput, {
        name: "VBR London",
        endpointUrl: "https://vbr.acme.example:9419",
        username: "svc-cadres",
        syncIntervalMinutes: 30,
      }),
    },
    responses: { 200: ok("Updated", PlatformSchema), 422: err("Invalid input"), ...common },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const platform = await updatePlatform(
      kv,
      c.get("actor")!,
      c.req.valid("param").platformId,
      c.req.valid("json"),
      { now: clock(), masterKey },
    );
    return c.json(toPublicPlatform(platform), 200);
  },
);

apiV1Platforms.openapi(
  createRoute({
    method: "delete",
    path: "/{platformId}",
    operationId: "deletePlatform",
    summary: "Delete a platform with its credential, imported jobs and protected objects (runs are kept)",
    tags: ["Platforms"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PlatformId },
    responses: { 204: { description: "Deleted" }, ...common, 409: err("A sync of this platform is running") },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deletePlatform(kv, c.get("actor")!, c.req.valid("param").platformId, clock());
    return c.body(null, 204);
  },
);

apiV1Platforms.openapi(
  createRoute({
    method: "post",
    path: "/{platformId}/test",
    operationId: "testPlatform",
    summary: "Test connectivity: log in and read one resource; the outcome is also kept on the platform",
    tags: ["Platforms"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PlatformId },
    responses: {
      200: ok("`ok` and a message", z.object({ ok: z.boolean(), message: z.string() })),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const outcome = await testPlatform(kv, c.get("actor")!, c.req.valid("param").platformId, {
      masterKey,
      now: clock(),
    });
    return c.json(outcome, 200);
  },
);

apiV1Platforms.openapi(
  createRoute({
    method: "post",
    path: "/{platformId}/sync",
    operationId: "syncPlatform",
    summary: "Sync now: import jobs, start pending retries, import runs and objects; answers the sync report",
    tags: ["Platforms"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PlatformId },
    responses: {
      200: ok("The sync report (status failed with the error when the platform failed)", SyncReportSchema),
      ...common,
      409: err("A sync of this platform is already running"),
    },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const actor = c.get("actor")!;
    // syncPlatform checks the actor's scope and permission (NotFoundError / ForbiddenError).
    const id = c.req.valid("param").platformId;
    return c.json(await syncPlatform(kv, id, { masterKey, now: clock(), actor }), 200);
  },
);
