/**
 * The wire body of `POST /v1/hints` (docs/hints.md): its types, and the zod schema a
 * worker parses it with. A malformed body is a `GRANARY_ERR_BAD_REQUEST` naming the
 * field, what it expected and what came in.
 */
import { z } from 'zod';
import { BadRequestError } from '../errors.js';
import { checkRange } from '../ufs/url.js';
import { show } from '../util/validate.js';

/** One future read a job announces: a byte range of one object version, at a position of its plan. */
export interface HintAccess {
  url: string;
  etag: string;
  offset: number;
  length: number;
  /** The job's position at which it reads this range (>= 0; the loader's partition index in its plan). */
  pos: number;
}

/** The body of `POST /v1/hints`. Every field but `job` is optional; see docs/hints.md. */
export interface HintRequest {
  /** The job's id: 1-200 characters. */
  job: string;
  /** Reads at positions below `cursor` are done; they no longer count. Never moves back (except after `reset`). */
  cursor?: number | undefined;
  /** The job has already sent its reads for positions below this; prefetch from here. @default cursor */
  readFrom?: number | undefined;
  /** Positions from `readFrom` the worker may prefetch. @default 8 */
  lookahead?: number | undefined;
  /** The job's hints expire this long after its last request. @default 60_000 (capped by the worker's `maxTtlMs`) */
  ttlMs?: number | undefined;
  /** Drop the job's earlier hints first (a new epoch, a new stream). */
  reset?: boolean | undefined;
  /** Drop the job's hints now (the stream closed); other fields are ignored. */
  end?: boolean | undefined;
  accesses?: HintAccess[] | undefined;
}

export interface HintResponse {
  job: string;
  /** Accesses of this request the worker keeps. */
  accepted: number;
  /** Accesses refused because the job reached `maxPagesPerJob` (resend them later) or the worker `maxJobs`. */
  dropped: number;
  /** Page reads of this job the worker holds (not yet passed by its cursor). */
  pages: number;
  /** When the job's hints expire unless renewed (ms since the epoch); 0 after `end`. */
  expiresAt: number;
}

const MAX_JOB_ID = 200;
const MAX_ACCESSES_PER_REQUEST = 100_000;

const NON_NEG_INT = 'an integer from 0 and up';
const nonNegInt = z.int({ error: NON_NEG_INT }).min(0, { error: NON_NEG_INT });
const flag = z.boolean({ error: 'a boolean' });
const ACCESS = '{ url: string, etag: string, offset, length, pos }';

const hintAccessSchema = z.object(
  {
    url: z.string({ error: 'a string' }),
    etag: z.string({ error: 'a string' }),
    offset: nonNegInt,
    length: nonNegInt,
    pos: nonNegInt,
  },
  { error: ACCESS },
);

/** `POST /v1/hints` as zod parses it: unknown fields are dropped. */
export const hintRequestSchema = z.object(
  {
    job: z
      .string({ error: `a string of 1-${MAX_JOB_ID} characters` })
      .min(1, { error: `a string of 1-${MAX_JOB_ID} characters` })
      .max(MAX_JOB_ID, { error: `a string of 1-${MAX_JOB_ID} characters` }),
    cursor: nonNegInt.optional(),
    readFrom: nonNegInt.optional(),
    lookahead: nonNegInt.optional(),
    ttlMs: nonNegInt.optional(),
    reset: flag.optional(),
    end: flag.optional(),
    accesses: z
      .array(hintAccessSchema, { error: `an array of ${ACCESS}` })
      .max(MAX_ACCESSES_PER_REQUEST, { error: `at most ${MAX_ACCESSES_PER_REQUEST} accesses; send them in chunks` })
      .optional(),
  },
  { error: 'a JSON body { "job", "cursor"?, "readFrom"?, "lookahead"?, "ttlMs"?, "reset"?, "end"?, "accesses"? }' },
);

function fieldName(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out;
}

/** Validates a `POST /v1/hints` body; throws `GRANARY_ERR_BAD_REQUEST` naming the field. */
export function parseHintRequest(body: unknown): HintRequest {
  // Refuse an oversized batch before zod walks every element of it.
  const accesses = (body as { accesses?: unknown } | null)?.accesses;
  if (Array.isArray(accesses) && accesses.length > MAX_ACCESSES_PER_REQUEST) {
    throw new BadRequestError(`Hint request holds ${accesses.length} accesses, more than ${MAX_ACCESSES_PER_REQUEST}; send them in chunks`);
  }
  const r = hintRequestSchema.safeParse(body, { reportInput: true });
  if (!r.success) {
    const issue = r.error.issues[0];
    if (issue === undefined || issue.path.length === 0) {
      throw new BadRequestError(`Expected ${issue?.message ?? 'a JSON object'}, got \`${show(body).slice(0, 100)}\``);
    }
    throw new BadRequestError(`Hint field \`${fieldName(issue.path)}\` must be ${issue.message}, got \`${show(issue.input).slice(0, 100)}\` (${typeof issue.input})`);
  }
  const req: HintRequest = { job: r.data.job };
  const d = r.data;
  if (d.cursor !== undefined) req.cursor = d.cursor;
  if (d.readFrom !== undefined) req.readFrom = d.readFrom;
  if (d.lookahead !== undefined) req.lookahead = d.lookahead;
  if (d.ttlMs !== undefined) req.ttlMs = d.ttlMs;
  if (d.reset !== undefined) req.reset = d.reset;
  if (d.end !== undefined) req.end = d.end;
  if (d.accesses !== undefined) {
    req.accesses = d.accesses.map((a) => {
      checkRange(a.url, a.offset, a.length);
      return { url: a.url, etag: a.etag, offset: a.offset, length: a.length, pos: a.pos };
    });
  }
  return req;
}
