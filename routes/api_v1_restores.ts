/** `/api/v1/restores`: restore requests — files, a whole image, bare-metal recovery — and their state. */
import { createRoute, z } from "@hono/zod-openapi";
import { BmrInput, requestBmr } from "../domain/bmr.ts";
import {
  FileRestoreInput,
  getRestore,
  ImageRestoreInput,
  listRestores,
  requestFileRestore,
  requestImageRestore,
  type RestoreRequest,
} from "../domain/restore_requests.ts";
import type { Actor } from "../domain/rbac.ts";
import { requires } from "./access.ts";
import { apiRouter, err, Id, jsonBody, ok, restoreDenied } from "./api_common.ts";
import { page, RestoreSchema } from "./api_schemas.ts";

/** `/api/v1/restores` */
export const apiV1Restores = apiRouter();

apiV1Restores.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listRestores",
    summary: "File, image and bare-metal restores in your scope, newest first, with status and progress",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: {
      query: z.object({
        cursor: Id.optional(),
        limit: z.coerce.number().int().min(1, "must be 1–200").max(200, "must be 1–200").default(50),
      }),
    },
    responses: {
      200: {
        description: "A page of restores and the cursor of the next page",
        content: {
          "application/json": { schema: page(RestoreSchema) },
        },
      },
      ...restoreDenied,
      422: err("Invalid cursor or limit"),
    },
  }),
  async (c) => c.json(await listRestores(c.get("deps").kv, c.get("actor")!, c.req.valid("query")), 200),
);

/**
 * Declares a restore request route (POST, 201 with the pending request): the file and image restores differ
 * only in their path, words, body schema (the domain's, one for the form, the API and the domain) and
 * request function.
 */
function restoreRequestRoute<S extends typeof FileRestoreInput | typeof ImageRestoreInput>(
  route: {
    path: string;
    operationId: string;
    summary: string;
    description?: string;
    schema: S;
    example: z.input<S>;
    created: string;
    notFound: string;
    invalid: string;
  },
  request: (kv: Deno.Kv, actor: Actor, input: z.output<S>, now: Date) => Promise<RestoreRequest>,
) {
  apiV1Restores.openapi(
    createRoute({
      method: "post",
      path: route.path,
      operationId: route.operationId,
      summary: route.summary,
      ...(route.description === undefined ? {} : { description: route.description }),
      tags: ["Restore"],
      middleware: [requires("backup.restore")] as const,
      request: jsonBody(route.schema, route.example),
      responses: {
        201: ok(route.created, RestoreSchema),
        ...restoreDenied,
        404: err(route.notFound),
        422: err(route.invalid),
      },
    }),
    async (c) => {
      const { kv, clock } = c.get("deps");
      return c.json(await request(kv, c.get("actor")!, c.req.valid("json") as z.output<S>, clock()), 201);
    },
  );
}

restoreRequestRoute({
  path: "/",
  operationId: "restoreFiles",
  summary: "File-level restore (high priority): up to 10,000 paths to a target path on a host",
  description:
    "Paths are absolute (POSIX or Windows), normalized and deduplicated; a path under a selected " +
    "folder is dropped. The target host defaults to the restore point's host and must be in your scope. " +
    "`sourceTargetId` reads the point from its replica on that storage target (a finished replication " +
    "listed in the point's `replications`), served by the BES holding that target; empty: the point's own " +
    "repository. This endpoint accepts bodies up to 4 MiB.",
  schema: FileRestoreInput,
  example: {
    restorePointId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M",
    paths: ["/etc/nginx", "/home/alice/report.pdf"],
    targetPath: "/restore",
    overwrite: false,
  },
  created: "The restore request (status pending); poll GET /api/v1/restores/{restoreId}",
  notFound: "Restore point or target host not found or outside your scope",
  invalid: "Invalid paths, target, source replica, or a restore point that is not complete",
}, requestFileRestore);

restoreRequestRoute({
  path: "/image",
  operationId: "restoreImage",
  summary: "Image restore (critical priority) of an image restore point to a target host and path",
  schema: ImageRestoreInput,
  example: {
    restorePointId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M",
    targetHostId: "01JC9Z8X7W6V5T4S3R2Q1P0N9K",
    targetPath: "/dev/sdb",
  },
  created: "The restore request (status pending)",
  notFound: "Restore point or target host not found or outside your scope",
  invalid: "Invalid input, a file restore point, or one that is not complete",
}, requestImageRestore);

apiV1Restores.openapi(
  createRoute({
    method: "post",
    path: "/bmr",
    operationId: "restoreBareMetal",
    summary: "Bare-metal restore (critical priority) by pxe or iso; answers the one-time token once",
    description: "The restore point must be complete and its BES online; pxe needs PXE enabled on the BES. " +
      "`mode` says how the machine boots a Linux live environment (your PXE server, or live media); there it " +
      "runs the recovery agent (`command`, with the token and `besCertificate`), which redeems the token with " +
      "the BES and writes the image onto the disk. " +
      "The token (a UUID) expires after 4 hours and can be redeemed once; it is stored only as a hash and " +
      "cannot be shown again.",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: {
      body: {
        content: {
          "application/json": {
            schema: BmrInput,
            example: { restorePointId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M", mode: "pxe" },
          },
        },
        required: true,
      },
    },
    responses: {
      201: {
        description: "restore, token (shown once), expiresAt, instructions, command, besCertificate",
        content: {
          "application/json": {
            schema: z.object({
              restore: RestoreSchema,
              token: z.string(),
              expiresAt: z.string(),
              instructions: z.array(z.string()),
              command: z.string().describe(
                "The recovery agent's command: deno task agent recover --bes URL --bes-cert FILE --token TOKEN " +
                  "--disk PATH (TOKEN and the disk to fill in)",
              ),
              besCertificate: z.string().nullable().describe(
                "The BES's certificate (PEM) for --bes-cert; null before the BES reported one",
              ),
            }),
          },
        },
      },
      ...restoreDenied,
      404: err("Restore point not found or outside your scope"),
      422: err("Not complete, BES offline, or PXE not enabled on the BES"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const result = await requestBmr(kv, c.get("actor")!, c.req.valid("json"), clock());
    c.header("Cache-Control", "no-store");
    return c.json(result, 201);
  },
);

apiV1Restores.openapi(
  createRoute({
    method: "get",
    path: "/{restoreId}",
    operationId: "getRestore",
    summary: "A restore: status and live progress from its job; files, bytes and per-file errors when done",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: { params: z.object({ restoreId: Id }) },
    responses: {
      200: ok("The restore request", RestoreSchema),
      ...restoreDenied,
      404: err("Not found or outside your scope"),
    },
  }),
  async (c) => {
    const { kv } = c.get("deps");
    const restore = await getRestore(kv, c.get("actor")!, c.req.valid("param").restoreId);
    return c.json(restore, 200);
  },
);
