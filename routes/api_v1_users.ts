/** `/api/v1/users`: the account's users (admin). */
import { createRoute, z } from "@hono/zod-openapi";
import { ROLES } from "../domain/types.ts";
import {
  createUser,
  deleteUser,
  listUsers,
  requireUser,
  toPublicUser,
  updateUser,
  UserCreateInput,
  UserUpdateInput,
} from "../domain/users.ts";
import { requires } from "./access.ts";
import { apiRouter, identityErrors, json, jsonBody, offsetPage, Paging } from "./api_common.ts";

const UserSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  email: z.string(),
  name: z.string(),
  role: z.enum(ROLES),
  orgScope: z.union([z.literal("all"), z.array(z.string())]),
  disabled: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("User");

/** `/api/v1/users` */
export const apiV1Users = apiRouter();

const UserId = z.object({ userId: z.string().min(1).max(40) });

apiV1Users.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listUsers",
    summary: "List users in your scope",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: { query: Paging },
    responses: {
      200: json(offsetPage(UserSchema), "Users by email"),
      ...identityErrors.input,
    },
  }),
  async (c) => {
    const { offset, limit } = c.req.valid("query");
    const actor = c.get("actor")!;
    const users = await listUsers(c.get("deps").kv, actor, actor.accountId!);
    const values = users.slice(offset, offset + limit).map(toPublicUser);
    return c.json({ values, cursor: offset + limit < users.length ? String(offset + limit) : "" }, 200);
  },
);

apiV1Users.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createUser",
    summary: "Create a user",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: jsonBody(UserCreateInput, {
      email: "ops@acme.example",
      name: "Ops",
      role: "operator",
      orgScope: ["01JC9Z8X7W6V5T4S3R2Q1P0N9M"],
      password: "a long passphrase of yours",
    }),
    responses: { 201: json(UserSchema, "Created"), ...identityErrors.input },
  }),
  async (c) => {
    const { kv, clock, config } = c.get("deps");
    const actor = c.get("actor")!;
    const user = await createUser(
      kv,
      actor,
      { ...c.req.valid("json"), accountId: actor.accountId! },
      clock(),
      config.passwordHashing,
    );
    return c.json(toPublicUser(user), 201);
  },
);

apiV1Users.openapi(
  createRoute({
    method: "get",
    path: "/{userId}",
    operationId: "getUser",
    summary: "Get a user",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: { params: UserId },
    responses: { 200: json(UserSchema, "The user"), ...identityErrors.object },
  }),
  async (c) => {
    const user = await requireUser(c.get("deps").kv, c.get("actor")!, c.req.valid("param").userId);
    return c.json(toPublicUser(user), 200);
  },
);

apiV1Users.openapi(
  createRoute({
    method: "patch",
    path: "/{userId}",
    operationId: "updateUser",
    summary: "Update a user's name, role, scope or disabled flag",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: {
      params: UserId,
      ...jsonBody(UserUpdateInput, {
        name: "Ops (night shift)",
        role: "viewer",
        orgScope: ["01JC9Z8X7W6V5T4S3R2Q1P0N9M"],
        disabled: false,
      }),
    },
    responses: {
      200: json(UserSchema, "Updated"),
      ...identityErrors.change,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const { userId } = c.req.valid("param");
    const user = await updateUser(kv, c.get("actor")!, userId, c.req.valid("json"), clock());
    return c.json(toPublicUser(user), 200);
  },
);

apiV1Users.openapi(
  createRoute({
    method: "delete",
    path: "/{userId}",
    operationId: "deleteUser",
    summary: "Delete a user (their sessions and tokens go too)",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: { params: UserId },
    responses: { 204: { description: "Deleted" }, ...identityErrors.object },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deleteUser(kv, c.get("actor")!, c.req.valid("param").userId, clock());
    return c.body(null, 204);
  },
);
