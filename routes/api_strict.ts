/**
 * Strict request schemas for `/api/v1`: every body and query refuses fields it does not declare, so a typo in
 * automation is a 422 naming the field (`{"fields": {"sheduleCron": "Unknown field"}}`), not a silent no-op.
 *
 * The routes declare the SAME schemas the forms and the domain use (one schema per input); `strictInput` derives,
 * once per schema, the variant that also refuses unknown fields — same fields, same rules, same messages — and
 * `apiRouter()` (api_common.ts) applies it to every route's query and JSON body, so no route can forget it and the
 * OpenAPI document shows the strict objects (`additionalProperties: false`). The forms keep parsing the schema as
 * declared: a form carries fields of its own (`_csrf`, buttons) and the domain functions are handed objects with
 * more than the input (`accountId`), so the domain schemas themselves stay as they are.
 */
import { z } from "@hono/zod-openapi";

// deno-lint-ignore no-explicit-any
type AnySchema = z.ZodType<any, any>;
type Def = Record<string, unknown> & { type: string };

const defOf = (schema: AnySchema): Def => (schema as unknown as { _zod: { def: Def } })._zod.def;

/**
 * A copy of `schema` with `changes` in its definition. The copy keeps the original as its parent, so its
 * metadata (the OpenAPI name, description, examples) is inherited, and keeps its checks (refinements).
 */
function cloneWith<T extends AnySchema>(schema: T, changes: Record<string, unknown>): T {
  const def = Object.defineProperties({}, {
    ...Object.getOwnPropertyDescriptors(defOf(schema)),
    ...Object.getOwnPropertyDescriptors(changes),
  });
  return schema.clone(def as never, { parent: true }) as T;
}

/** Wrappers whose definition holds one inner schema (`innerType`). */
const WRAPPERS = new Set(["optional", "nullable", "default", "prefault", "nonoptional", "readonly", "catch"]);

const strictCache = new WeakMap<AnySchema, AnySchema>();
const openTopCache = new WeakMap<AnySchema, AnySchema>();

/**
 * `schema` with every object in it strict (unknown keys refused with an `unrecognized_keys` issue), at any depth:
 * inside optional/nullable/default wrappers, arrays, records, tuples, unions (discriminated or not) and pipes.
 * An intersection of objects (`a.and(b)`) refuses keys that none of its parts declares. An object that declares
 * a catch-all (`z.looseObject`, `.catchall(…)`) keeps it: it asked for extra keys. Leaves come back unchanged (the
 * same instance); a schema without objects comes back as it is.
 */
export function strictInput<T extends AnySchema>(schema: T): T {
  return strict(schema, true) as T;
}

function strict(schema: AnySchema, top: boolean): AnySchema {
  const cache = top ? strictCache : openTopCache;
  const cached = cache.get(schema);
  if (cached) return cached;
  const result = build(schema, top);
  cache.set(schema, result);
  return result;
}

/**
 * The strict variant; with `top` false, the object at the top (of each union option, each pipe end) is left open
 * and only what is nested is made strict — the parts of an intersection, whose keys are checked together.
 */
function build(schema: AnySchema, top: boolean): AnySchema {
  const def = defOf(schema);
  switch (def.type) {
    case "object": {
      const shape = def.shape as Record<string, AnySchema>;
      const nested = Object.fromEntries(Object.entries(shape).map(([k, v]) => [k, strict(v, true)]));
      const shapeChanged = Object.keys(shape).some((k) => nested[k] !== shape[k]);
      const close = top && def.catchall === undefined;
      if (!shapeChanged && !close) return schema;
      return cloneWith(schema, {
        ...(shapeChanged ? { shape: nested } : {}),
        ...(close ? { catchall: z.never() } : {}),
      });
    }
    case "array":
      return same(schema, def, { element: strict(def.element as AnySchema, true) });
    case "record":
      return same(schema, def, { valueType: strict(def.valueType as AnySchema, true) });
    case "tuple":
      return same(schema, def, {
        items: (def.items as AnySchema[]).map((item) => strict(item, true)),
        ...(def.rest ? { rest: strict(def.rest as AnySchema, true) } : {}),
      });
    case "union":
      return same(schema, def, { options: (def.options as AnySchema[]).map((o) => strict(o, top)) });
    case "pipe":
      return same(schema, def, {
        in: strict(def.in as AnySchema, top),
        out: strict(def.out as AnySchema, top),
      });
    case "intersection": {
      const parts = same(schema, def, {
        left: strict(def.left as AnySchema, false),
        right: strict(def.right as AnySchema, false),
      });
      const known = keysOf(schema);
      if (!top || known === "any") return parts;
      return z.preprocess((value, ctx) => {
        if (value && typeof value === "object" && !Array.isArray(value)) {
          const unknown = Object.keys(value).filter((key) => !known.has(key));
          if (unknown.length) ctx.addIssue({ code: "unrecognized_keys", keys: unknown, input: value });
        }
        return value;
      }, parts);
    }
    default:
      if (WRAPPERS.has(def.type)) {
        return same(schema, def, { innerType: strict(def.innerType as AnySchema, top) });
      }
      return schema; // leaves (string, number, enum, literal, …) and lazy schemas
  }
}

/** `schema` itself when none of `changes` differs from its definition, else a copy with them. */
function same(schema: AnySchema, def: Def, changes: Record<string, unknown>): AnySchema {
  const changed = Object.entries(changes).some(([key, value]) =>
    Array.isArray(value) ? value.some((v, i) => v !== (def[key] as unknown[])[i]) : value !== def[key]
  );
  return changed ? cloneWith(schema, changes) : schema;
}

/** The keys an object-like schema declares (across union options and intersection parts); "any" when open. */
function keysOf(schema: AnySchema): Set<string> | "any" {
  const def = defOf(schema);
  if (def.type === "object") {
    const closed = def.catchall === undefined || defOf(def.catchall as AnySchema).type === "never";
    return closed ? new Set(Object.keys(def.shape as object)) : "any";
  }
  const parts = def.type === "union"
    ? def.options as AnySchema[]
    : def.type === "intersection"
    ? [def.left as AnySchema, def.right as AnySchema]
    : def.type === "pipe"
    ? [defOf(def.in as AnySchema).type === "transform" ? def.out as AnySchema : def.in as AnySchema]
    : WRAPPERS.has(def.type)
    ? [def.innerType as AnySchema]
    : null;
  if (!parts) return "any";
  const keys = new Set<string>();
  for (const part of parts) {
    const k = keysOf(part);
    if (k === "any") return "any";
    for (const key of k) keys.add(key);
  }
  return keys;
}
