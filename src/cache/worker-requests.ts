/**
 * Parsing of what clients send a cache worker: query parameters and JSON bodies, each
 * checked against its schema; anything malformed is `GRANARY_ERR_BAD_REQUEST`.
 */
import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { BadRequestError, isGranaryError } from '../errors.js';
import { checkRange } from '../ufs/url.js';

const MiB = 1024 * 1024;

/** One byte range of a `POST /v1/load` body. */
export interface LoadRange {
  url: string;
  etag?: string;
  offset: number;
  length: number;
}

const LoadBodySchema = z.object({
  ranges: z.array(
    z.object({
      url: z.string().min(1),
      offset: z.number(),
      length: z.number(),
      etag: z.string().optional(),
    }),
  ),
});

function issues(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length === 0 ? '(body)' : i.path.join('.')}: ${i.message}`)
    .join('; ');
}

/** The ranges of a `POST /v1/load` body: `{ "ranges": [{ "url", "offset", "length", "etag"? }] }`. */
export function parseLoadBody(body: unknown): LoadRange[] {
  const parsed = LoadBodySchema.safeParse(body);
  if (!parsed.success) {
    throw new BadRequestError(`Expected a JSON body { "ranges": [{ "url", "offset", "length", "etag"? }] }: ${issues(parsed.error)}`);
  }
  return parsed.data.ranges.map((r, i) => {
    try {
      checkRange(r.url, r.offset, r.length);
    } catch (err) {
      throw isGranaryError(err) ? new BadRequestError(`ranges[${i}]: ${err.message}`, { url: r.url }) : err;
    }
    return r.etag === undefined ? { url: r.url, offset: r.offset, length: r.length } : { url: r.url, offset: r.offset, length: r.length, etag: r.etag };
  });
}

const Int = z.string().regex(/^-?\d{1,16}$/, 'must be an integer');
const NonNegativeInt = z.string().regex(/^\d{1,12}$/, 'must be an integer from 0 and up');

function queryValue<T>(u: URL, name: string, schema: z.ZodType<T>): T {
  const raw = u.searchParams.get(name);
  const parsed = schema.safeParse(raw ?? undefined);
  if (!parsed.success) {
    if (raw === null) throw new BadRequestError(`Missing query parameter \`${name}\` in ${u.pathname}${u.search}`);
    throw new BadRequestError(`Query parameter \`${name}\` ${parsed.error.issues[0]?.message ?? 'is invalid'}, got \`${raw.slice(0, 100)}\``);
  }
  return parsed.data;
}

/**
 * The URL of a request from its target. Resolved as a path under a fixed origin, never
 * against one: `//x/v1/read` would otherwise name host `x` and path `/v1/read`, and
 * `//` does not parse at all.
 */
export function requestUrl(target: string | undefined): URL {
  const t = target ?? '/';
  if (!t.startsWith('/')) throw new BadRequestError(`Expected a request target that is a path, got \`${t.slice(0, 100)}\``);
  try {
    return new URL(`http://worker${t}`);
  } catch {
    throw new BadRequestError(`Request target \`${t.slice(0, 100)}\` does not parse as a path`);
  }
}

// Every read parses these: a plain test first, the schema only to word a refusal.
const INT_RE = /^-?\d{1,16}$/;
const NON_NEGATIVE_INT_RE = /^\d{1,12}$/;
const NonEmpty = z.string().min(1);

/** A required, non-empty query parameter. */
export function requiredParam(u: URL, name: string): string {
  const raw = u.searchParams.get(name);
  if (raw !== null && raw.length > 0) return raw;
  return queryValue(u, name, NonEmpty);
}

/** A required integer query parameter (range checks are the caller's). */
export function intParam(u: URL, name: string): number {
  const raw = u.searchParams.get(name);
  if (raw !== null && INT_RE.test(raw)) return Number(raw);
  return Number(queryValue(u, name, Int));
}

/** An optional integer query parameter from 0 and up (a `size`). */
export function optionalIntParam(u: URL, name: string): number | undefined {
  const raw = u.searchParams.get(name);
  if (raw === null) return undefined;
  if (NON_NEGATIVE_INT_RE.test(raw)) return Number(raw);
  return Number(queryValue(u, name, NonNegativeInt));
}

/** Most page indices one `/v1/corrupt` may name (a maximal read of the smallest pages is far fewer). */
const MAX_PAGE_LIST = 65536;
const PAGE_LIST_RE = /^\d{1,12}(,\d{1,12})*$/;

/** A required comma-separated list of page indices (`pages=3,4`). */
export function pageListParam(u: URL, name: string): number[] {
  const raw = requiredParam(u, name);
  if (!PAGE_LIST_RE.test(raw)) throw new BadRequestError(`Query parameter \`${name}\` must list page indices separated by commas, got \`${raw.slice(0, 100)}\``);
  const pages = raw.split(',').map(Number);
  if (pages.length > MAX_PAGE_LIST) throw new BadRequestError(`Query parameter \`${name}\` lists ${pages.length} pages, more than ${MAX_PAGE_LIST}`);
  return pages;
}

/** A client's `maxAgeMs`: it will not accept metadata older than this (its own TTL). */
export function maxAgeParam(u: URL): number | undefined {
  if (u.searchParams.get('maxAgeMs') === null) return undefined;
  return Number(queryValue(u, 'maxAgeMs', NonNegativeInt));
}

/** A JSON request body of at most `limit` bytes. */
export async function readJsonBody(req: IncomingMessage, limit = 16 * MiB): Promise<unknown> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.byteLength;
    if (n > limit) throw new BadRequestError(`Request body over ${limit} bytes`);
    chunks.push(c);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch (err) {
    throw new BadRequestError(`Request body is not JSON: ${(err as Error).message}`);
  }
}
