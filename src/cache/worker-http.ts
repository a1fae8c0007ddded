/**
 * The worker's HTTP face: routing, the bearer token, the store policy on every URL a
 * request names, and answers (bytes, JSON, coded errors). The cache itself is
 * `ReadThrough`'s; load jobs are `LoadJobs`'.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BadRequestError, ClosedError, InternalError, isGranaryError, RangeTooLargeError } from '../errors.js';
import { checkRange } from '../ufs/url.js';
import { parseHintRequest, type WorkerHints } from './hints.js';
import { CRC_ALGORITHM, encodeTrailer } from './page-checksum.js';
import { pageKey, pagesForRange } from './page-key.js';
import { Headers, Paths, statusForCode } from './protocol.js';
import { parseTouchBody } from './short-circuit-touch.js';
import { refusalReason, type AccessPolicy } from './worker-access.js';
import type { ReadThrough } from './worker-core.js';
import type { LoadJobs } from './worker-jobs.js';
import type { RequestLimiter } from './worker-limits.js';
import type { WorkerMetrics } from './worker-metrics.js';
import { intParam, maxAgeParam, optionalIntParam, pageListParam, parseLoadBody, readJsonBody, requestUrl, requiredParam } from './worker-requests.js';
import type { WorkerInfoResponse } from './worker-options.js';

export interface WorkerHttpContext {
  readonly id: string;
  readonly pageSize: number;
  readonly maxReadBytes: number;
  readonly policy: AccessPolicy;
  readonly core: ReadThrough;
  readonly jobs: LoadJobs;
  readonly hints: WorkerHints | undefined;
  readonly metrics: WorkerMetrics;
  /** Requests in flight, per connection and in total (docs/security.md, Limits). */
  readonly limiter: RequestLimiter;
  closing(): boolean;
  /** Close the server's idle keep-alive connections (while draining). */
  releaseIdle(): void;
  info(): WorkerInfoResponse;
  /** The `/metrics` text, gauges refreshed. */
  metricsText(): Promise<string>;
}

/** Labelled metric children, looked up once per endpoint (and status): a label lookup per request costs more than the count. */
interface MetricChildren {
  latency: Map<string, { observe(v: number): void }>;
  requests: Map<string, { inc(): void }>;
}
const childrenOf = new WeakMap<WorkerMetrics, MetricChildren>();

function children(metrics: WorkerMetrics): MetricChildren {
  let c = childrenOf.get(metrics);
  if (!c) {
    c = { latency: new Map(), requests: new Map() };
    childrenOf.set(metrics, c);
  }
  return c;
}

/** The request handler of a worker's HTTP server. */
export function workerHandler(ctx: WorkerHttpContext): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => void handle(ctx, req, res);
}

async function handle(ctx: WorkerHttpContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = process.hrtime.bigint();
  let endpoint = 'unknown';
  try {
    const u = requestUrl(req.url);
    endpoint = u.pathname.startsWith(Paths.jobs) ? Paths.jobs : u.pathname;
    res.setHeader(Headers.worker, ctx.id);
    if (u.pathname === Paths.health) return send(res, 200, 'ok\n', 'text/plain');
    ctx.policy.authorize(req.headers.authorization);
    // Scrapes are not counted: a busy worker must still say why it is busy.
    if (u.pathname !== Paths.metrics) ctx.limiter.admit(req, res);
    if (ctx.closing()) throw new ClosedError(`Worker ${ctx.id} is shutting down`);
    switch (`${req.method ?? 'GET'} ${endpoint}`) {
      case `GET ${Paths.read}`:
        return await handleRead(ctx, u, res);
      case `GET ${Paths.stat}`:
        return await handleStat(ctx, u, res);
      case `GET ${Paths.list}`:
        return await handleList(ctx, u, res);
      case `POST ${Paths.invalidate}`:
        return await handleInvalidate(ctx, u, res);
      case `POST ${Paths.corrupt}`:
        return await handleCorrupt(ctx, u, res);
      case `POST ${Paths.load}`:
        return await handleLoad(ctx, await readJsonBody(req), res);
      case `POST ${Paths.hints}`:
        return await handleHints(ctx, await readJsonBody(req), res);
      case `POST ${Paths.touch}`:
        return json(res, 200, ctx.core.touch(parseTouchBody(await readJsonBody(req))));
      case `GET ${Paths.jobs}`:
        return json(res, 200, ctx.jobs.get(decodeURIComponent(u.pathname.slice(Paths.jobs.length))));
      case `GET ${Paths.info}`:
        return json(res, 200, ctx.info());
      case `GET ${Paths.metrics}`:
        return send(res, 200, await ctx.metricsText(), ctx.metrics.registry.contentType);
      default:
        throw new BadRequestError(`No such endpoint: ${req.method ?? 'GET'} ${u.pathname}`);
    }
  } catch (err) {
    sendError(ctx, res, err);
  } finally {
    // A drain waits for keep-alive connections: let this one go once its answer is out.
    if (ctx.closing()) res.once('finish', () => ctx.releaseIdle());
    const secs = Number(process.hrtime.bigint() - started) / 1e9;
    const m = children(ctx.metrics);
    const latency = m.latency.get(endpoint) ?? m.latency.set(endpoint, ctx.metrics.latency.labels(endpoint)).get(endpoint);
    latency?.observe(secs);
    const key = `${endpoint} ${res.statusCode}`;
    const count = m.requests.get(key) ?? m.requests.set(key, ctx.metrics.requests.labels(endpoint, String(res.statusCode))).get(key);
    count?.inc();
  }
}

async function handleRead(ctx: WorkerHttpContext, u: URL, res: ServerResponse): Promise<void> {
  const url = requiredParam(u, 'url');
  const offset = intParam(u, 'offset');
  const length = intParam(u, 'length');
  await ctx.policy.check(url);
  checkRange(url, offset, length);
  if (length > ctx.maxReadBytes) {
    throw new RangeTooLargeError(`Range of ${length} bytes exceeds this worker's maxReadBytes ${ctx.maxReadBytes} (${url})`, { url });
  }
  const etag = u.searchParams.get('etag') ?? undefined;
  if (ctx.hints && etag !== undefined) {
    const { first, count } = pagesForRange(offset, length, ctx.pageSize);
    ctx.hints.classify(Array.from({ length: count }, (_, i) => pageKey(url, etag, first + i)));
  }
  const size = optionalIntParam(u, 'size');
  const crc = u.searchParams.get('crc');
  if (crc !== null && crc !== CRC_ALGORITHM) throw new BadRequestError(`Unknown checksum \`${crc.slice(0, 40)}\` (this worker sends ${CRC_ALGORITHM})`, { url });
  const { pieces, info, hit, crcs } = await ctx.core.readPieces(url, offset, length, etag, etag === undefined ? undefined : size, crc !== null);
  res.setHeader(Headers.etag, info.etag);
  res.setHeader(Headers.cache, hit);
  const bytes = pieces.reduce((n, p) => n + p.byteLength, 0);
  ctx.core.served(bytes);
  if (crcs) {
    res.setHeader(Headers.crc, String(ctx.pageSize));
    sendBytes(res, [...pieces, encodeTrailer(crcs)], bytes + crcs.length * 4);
  } else {
    sendBytes(res, pieces, bytes);
  }
}

/** A client found these pages of a version corrupt (or without a checksum): drop them, so the next read refetches them. */
async function handleCorrupt(ctx: WorkerHttpContext, u: URL, res: ServerResponse): Promise<void> {
  const url = requiredParam(u, 'url');
  const etag = requiredParam(u, 'etag');
  const pages = pageListParam(u, 'pages');
  await ctx.policy.check(url);
  const dropped = await ctx.core.dropPages(url, etag, pages);
  ctx.metrics.corruptReports.inc();
  json(res, 200, { dropped });
}

async function handleStat(ctx: WorkerHttpContext, u: URL, res: ServerResponse): Promise<void> {
  const url = requiredParam(u, 'url');
  await ctx.policy.check(url);
  const { info, fetchedAt } = await ctx.core.stat(url, maxAgeParam(u));
  res.setHeader(Headers.age, String(Math.max(0, Date.now() - fetchedAt)));
  json(res, 200, info);
}

async function handleList(ctx: WorkerHttpContext, u: URL, res: ServerResponse): Promise<void> {
  const prefix = requiredParam(u, 'prefix');
  await ctx.policy.check(prefix);
  const entry = await ctx.core.list(prefix, maxAgeParam(u));
  res.setHeader(Headers.age, String(Math.max(0, Date.now() - entry.fetchedAt)));
  json(res, 200, entry.value);
}

async function handleInvalidate(ctx: WorkerHttpContext, u: URL, res: ServerResponse): Promise<void> {
  const url = requiredParam(u, 'url');
  await ctx.policy.check(url);
  await ctx.core.invalidate(url);
  json(res, 200, { invalidated: url });
}

async function handleLoad(ctx: WorkerHttpContext, body: unknown, res: ServerResponse): Promise<void> {
  const ranges = parseLoadBody(body);
  for (const url of new Set(ranges.map((r) => r.url))) await ctx.policy.check(url);
  json(res, 202, ctx.jobs.start(ranges));
}

async function handleHints(ctx: WorkerHttpContext, body: unknown, res: ServerResponse): Promise<void> {
  if (!ctx.hints) throw new BadRequestError(`Worker ${ctx.id} runs without hints (startWorker({ hints: false }))`);
  const req = parseHintRequest(body);
  // A hint makes the worker read the store, so it is held to the same policy as a read.
  for (const url of new Set((req.accesses ?? []).map((a) => a.url))) await ctx.policy.check(url);
  json(res, 200, ctx.hints.registry.apply(req));
}

/** Send the pieces of a range as they lie in the page store: no copy into one buffer first. */
function sendBytes(res: ServerResponse, pieces: readonly Uint8Array[], length: number): void {
  res.statusCode = 200;
  res.setHeader('content-type', 'application/octet-stream');
  res.setHeader('content-length', length);
  if (pieces.length === 1) {
    res.end(pieces[0]);
    return;
  }
  res.cork();
  for (const p of pieces) res.write(p);
  res.end();
  res.uncork();
}

function send(res: ServerResponse, status: number, body: string, type: string): void {
  res.statusCode = status;
  res.setHeader('content-type', type);
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}

function json(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, JSON.stringify(value), 'application/json');
}

function sendError(ctx: WorkerHttpContext, res: ServerResponse, err: unknown): void {
  const e = isGranaryError(err) ? err : new InternalError(`Worker ${ctx.id} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  const reason = refusalReason(e);
  if (reason !== undefined) ctx.metrics.refused.inc({ reason });
  if (res.headersSent) {
    res.destroy(e);
    return;
  }
  json(res, statusForCode(e.code), e.toJSON());
}
