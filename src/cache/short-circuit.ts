/**
 * Short-circuit reads: a client on the same host as a worker reads that worker's pages
 * from its tmpfs tier itself (short-circuit-tier.ts), with no HTTP request and no
 * worker CPU: one kernel copy per byte, on libuv's thread pool, straight into the
 * caller's buffer.
 *
 * A worker is used this way only once its `/v1/info` named a directory and a nonce and
 * this process read the same nonce from `<dir>/NONCE`: the proof that both see the
 * same files, whatever the host names say. Any page that is absent, unreadable or fails
 * its checks makes the whole part go the normal way (HTTP to the worker, which also
 * fills a missing page), so short-circuit can only make a read faster, never wrong.
 */
import { channel } from 'node:diagnostics_channel';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { pageKey, pagesForRange, type PageKey } from './page-key.js';
import type { WorkerInfo } from './membership.js';
import { Paths } from './protocol.js';
import { readShmPage } from './short-circuit-page.js';
import { NONCE_FILE, type ShortCircuitInfo } from './short-circuit-tier.js';
import { TouchBatches } from './short-circuit-touch.js';
import type { WorkerInfoResponse } from './worker-options.js';
import type { WorkerTransport } from './worker-transport.js';

/** Published when a worker's tier is found usable or not: `{ worker, dir, usable, reason? }`. */
const probeChannel = channel('granary:client:short-circuit');
/** Published when a part could not be read from the tier: `{ worker, url, offset, length, reason }`. */
const missChannel = channel('granary:client:short-circuit-miss');

/** A worker whose probe failed (unreachable) is asked again after this long. */
const REPROBE_MS = 30_000;

export interface ShortCircuitStats {
  /** Parts read wholly from a worker's tmpfs tier. */
  hits: number;
  /** Parts tried there that went over HTTP instead (a page absent, unreadable or corrupt). */
  misses: number;
  /** Bytes read from the tier. */
  bytes: number;
  /** Workers whose tier this client found it can read. */
  workers: number;
}

/** The `shortCircuit` option, else `GRANARY_SHORT_CIRCUIT` (`0`, `false`, `no`, `off` turn it off), else on. */
export function shortCircuitEnabled(option: boolean | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  if (option !== undefined) {
    if (typeof option !== 'boolean') throw new InvalidArgumentError(`Expected \`shortCircuit\` to be a boolean, got \`${String(option)}\` (${typeof option})`);
    return option;
  }
  const v = env.GRANARY_SHORT_CIRCUIT?.trim().toLowerCase();
  if (v === undefined || v === '') return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  throw new InvalidArgumentError(`Expected GRANARY_SHORT_CIRCUIT to be 1/0, true/false, yes/no or on/off, got \`${v}\``);
}

/** One part of a read: `length` bytes of `(url, etag)` from `offset`, into `out[at, at + length)`. */
export interface ShortCircuitPart {
  url: string;
  etag: string;
  size: number;
  offset: number;
  length: number;
  out: Uint8Array;
  at: number;
}

interface Probe {
  /** The answer, once the probe is done. */
  target: ShortCircuitInfo | undefined;
  done: boolean;
  /** When a failed probe may be retried; `Infinity` for an answer (usable or not). */
  retryAt: number;
}

export class ShortCircuitReader {
  readonly #transport: WorkerTransport;
  readonly #probes = new Map<string, Probe>();
  readonly #counts: ShortCircuitStats = { hits: 0, misses: 0, bytes: 0, workers: 0 };
  /** Ends the probes in flight when the client closes. */
  readonly #closed = new AbortController();
  readonly #touches: TouchBatches;

  constructor(transport: WorkerTransport) {
    this.#transport = transport;
    this.#touches = new TouchBatches(transport);
  }

  stats(): ShortCircuitStats {
    return { ...this.#counts };
  }

  /** Abort the probes in flight (the client is closing). */
  close(): void {
    this.#closed.abort();
    this.#touches.close();
  }

  /**
   * Read one part from worker `w`'s tier. True: the bytes are in place and verified.
   * False: use the normal path (nothing counted as an error; the part's bytes in `out`
   * are garbage until then). The first read for a worker starts its probe and goes over
   * HTTP: a read never waits on a probe (a stalled worker would stall it twice).
   */
  async read(w: WorkerInfo | undefined, p: ShortCircuitPart): Promise<boolean> {
    if (w === undefined) return false;
    const t = this.#target(w);
    if (t === undefined) return false;
    const ps = t.pageSize;
    const { first, count } = pagesForRange(p.offset, p.length, ps);
    const end = p.offset + p.length;
    const copies: { from: Uint8Array; to: number }[] = [];
    const reads: Promise<string | undefined>[] = [];
    const keys: PageKey[] = [];
    for (let i = first; i < first + count; i++) {
      const start = i * ps;
      const dataLength = Math.min(ps, p.size - start);
      if (dataLength <= 0) return false;
      // A page wholly inside the part lands in place; a page cut by the part is read
      // whole (its CRC covers all of it) and the slice copied.
      const whole = start >= p.offset && start + dataLength <= end;
      const into = whole ? p.out.subarray(p.at + start - p.offset, p.at + start - p.offset + dataLength) : new Uint8Array(dataLength);
      if (!whole) copies.push({ from: into.subarray(Math.max(0, p.offset - start), Math.min(dataLength, end - start)), to: p.at + Math.max(0, start - p.offset) });
      const key = pageKey(p.url, p.etag, i);
      keys.push(key);
      reads.push(readShmPage({ dir: t.dir, pageSize: ps, key, dataLength, into }));
    }
    const reasons = await Promise.all(reads);
    const reason = reasons.find((r) => r !== undefined);
    if (reason !== undefined) {
      this.#counts.misses++;
      if (missChannel.hasSubscribers) missChannel.publish({ worker: w.id, url: p.url, offset: p.offset, length: p.length, reason });
      return false;
    }
    for (const c of copies) p.out.set(c.from, c.to);
    this.#touches.add(w, keys);
    this.#counts.hits++;
    this.#counts.bytes += p.length;
    return true;
  }

  #target(w: WorkerInfo): ShortCircuitInfo | undefined {
    const key = `${w.id}\n${w.url}`;
    const known = this.#probes.get(key);
    if (known !== undefined && (!known.done || Date.now() < known.retryAt)) return known.target;
    const probe: Probe = { target: undefined, done: false, retryAt: Infinity };
    this.#probes.set(key, probe);
    const retryLater = (): void => {
      probe.retryAt = Date.now() + REPROBE_MS;
    };
    void this.#probe(w, retryLater).then(
      (target) => {
        probe.target = target;
        probe.done = true;
        if (target !== undefined) this.#counts.workers++;
      },
      () => {
        probe.done = true;
        retryLater();
      },
    );
    return undefined;
  }

  async #probe(w: WorkerInfo, unreachable: () => void): Promise<ShortCircuitInfo | undefined> {
    let info: WorkerInfoResponse;
    try {
      // Not the caller's signal: the answer serves every later read, whichever call asked first.
      info = (await this.#transport.getJson<WorkerInfoResponse>(w, Paths.info, {}, this.#closed.signal)).value;
    } catch {
      unreachable();
      return undefined;
    }
    const reason = await unusable(info.shortCircuit);
    if (probeChannel.hasSubscribers) probeChannel.publish({ worker: w.id, dir: info.shortCircuit?.dir, usable: reason === undefined, reason });
    const sc = info.shortCircuit;
    return reason === undefined && sc !== undefined ? { dir: sc.dir, nonce: sc.nonce, pageSize: sc.pageSize } : undefined;
  }
}

/** Why a worker's advertised tier cannot be used from here, or `undefined` when this process reads the same nonce. */
async function unusable(sc: ShortCircuitInfo | undefined): Promise<string | undefined> {
  if (sc === undefined || typeof sc !== 'object' || sc === null) return 'the worker has no short-circuit tier';
  if (typeof sc.dir !== 'string' || typeof sc.nonce !== 'string' || sc.nonce.length < 16 || !Number.isSafeInteger(sc.pageSize) || sc.pageSize < 1) {
    return 'malformed shortCircuit in /v1/info';
  }
  let nonce: string;
  try {
    nonce = (await readFile(join(sc.dir, NONCE_FILE), 'utf8')).trim();
  } catch (err) {
    return `cannot read the nonce: ${(err as Error).message}`;
  }
  return nonce === sc.nonce ? undefined : 'nonce mismatch: another host, or another worker on that directory';
}
