import { InvalidArgumentError } from '../errors.js';
import type { StringHash } from './hash.js';
import { fmix32, murmur3 } from './hash.js';
import { DEFAULT_PAGE_SIZE, checkPageSize } from './page-key.js';

/*
 * Why rendezvous (highest-random-weight) hashing and not a ring of virtual nodes:
 *
 * - Minimal remapping is exact, not statistical: adding a worker moves only the keys
 *   it now wins, removing one moves only its own keys, and each moved key goes to its
 *   next-best worker, which is also the replica/fallback order `owners()` gives.
 * - Balance needs no tuning: every (key, worker) pair draws its own score, so load
 *   per worker is binomial around the mean. A virtual-node ring needs ~100-200 points
 *   per worker to get within 10-15%, plus a sorted array rebuilt on every change.
 * - Weights are exact with the logarithmic method (Schindelhauer & Schomaker): score =
 *   weight / -ln(u). Virtual nodes can only approximate weights by point counts.
 * - The price is O(workers) per lookup, against O(log points) for a ring. Clusters
 *   here have about 3-50 workers and a lookup is one string hash plus two integer
 *   mixes per worker, well under a microsecond for ten workers, and paid once per
 *   block of pages, not per byte. That is cheaper than a cache keyed by the (long)
 *   key string would be, so there is no cache.
 *
 * Determinism: scores depend only on the key, the member ids and weights, and a fixed
 * hash (MurmurHash3 of UTF-8), never on process state or member order, so every
 * client and worker process computes the same owners. Changing the hash would remap
 * every key: tests pin known placements.
 */

/** A worker on the ring. `id` is its identity (stable across restarts); `url` where to reach it. */
export interface RingMember {
  readonly id: string;
  readonly url: string;
  /** Relative capacity; a worker of weight 2 owns twice the keys of one of weight 1. @default 1 */
  readonly weight?: number | undefined;
}

export interface HashRingOptions {
  /** The seeded 32-bit string hash. Every process must use the same one. @default murmur3 */
  hash?: StringHash | undefined;
}

/** The default block size: 64 MiB of a file maps to one ring key, so large files spread over workers. */
export const DEFAULT_BLOCK_SIZE = 64 * 1024 * 1024;

const KEY_SEED_A = 0x9e3779b9;
const KEY_SEED_B = 0x85ebca6b;
const MEMBER_SEED_A = 0xc2b2ae35;
const MEMBER_SEED_B = 0x27d4eb2f;
const TWO_POW_32 = 4294967296;

interface Slot<M> {
  member: M;
  a: number;
  b: number;
  weight: number;
}

/**
 * Weighted rendezvous hashing over a fixed member list. Immutable: build a new ring
 * when membership changes (cheap, O(members)).
 *
 * @example
 * const ring = new HashRing([{ id: 'w1', url: 'http://10.0.0.1:7070' }, { id: 'w2', url: 'http://10.0.0.2:7070' }]);
 * const key = ringKey(info.url, info.etag, blockIndexOfPage(pageIndex, pagesPerBlock(pageSize)));
 * const [primary, fallback] = ring.owners(key, 2);
 */
export class HashRing<M extends RingMember = RingMember> {
  /** The members, in the order given. */
  readonly members: readonly M[];
  readonly #slots: readonly Slot<M>[];
  readonly #hash: StringHash;
  readonly #weighted: boolean;

  constructor(members: readonly M[], options: HashRingOptions = {}) {
    const list: unknown = members;
    if (!Array.isArray(list)) {
      throw new InvalidArgumentError(`Expected ring members to be an array, got ${typeof members}`);
    }
    const hash = options.hash ?? murmur3;
    if (typeof hash !== 'function') {
      throw new InvalidArgumentError(`Expected \`hash\` to be a function, got \`${String(hash)}\` (${typeof hash})`);
    }
    const seen = new Set<string>();
    const slots: Slot<M>[] = [];
    for (const member of members) {
      if (member === null || typeof member !== 'object' || typeof member.id !== 'string' || member.id.length === 0) {
        throw new InvalidArgumentError(`Expected every ring member to have a non-empty string \`id\`, got ${JSON.stringify(member)}`);
      }
      if (typeof member.url !== 'string') {
        throw new InvalidArgumentError(`Expected ring member ${member.id} to have a string \`url\`, got \`${String(member.url)}\` (${typeof member.url})`);
      }
      if (seen.has(member.id)) throw new InvalidArgumentError(`Ring member id ${member.id} appears twice (urls ${members.filter((m) => m.id === member.id).map((m) => m.url).join(', ')})`);
      seen.add(member.id);
      const weight = member.weight ?? 1;
      if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
        throw new InvalidArgumentError(`Expected \`weight\` of ring member ${member.id} to be a finite number above 0, got \`${String(weight)}\` (${typeof weight})`);
      }
      slots.push({ member, a: hash(member.id, MEMBER_SEED_A) >>> 0, b: hash(member.id, MEMBER_SEED_B) >>> 0, weight });
    }
    this.members = Object.freeze([...members]);
    this.#slots = slots;
    this.#hash = hash;
    this.#weighted = slots.some((s) => s.weight !== 1);
  }

  /** The number of members. */
  get size(): number {
    return this.#slots.length;
  }

  /** The member that owns `key`; `undefined` on an empty ring. */
  owner(key: string): M | undefined {
    const ka = this.#hash(key, KEY_SEED_A) >>> 0;
    const kb = this.#hash(key, KEY_SEED_B) >>> 0;
    let best: Slot<M> | undefined;
    let bestScore = -Infinity;
    for (const slot of this.#slots) {
      const score = this.#score(slot, ka, kb);
      if (best === undefined || score > bestScore || (score === bestScore && slot.member.id < best.member.id)) {
        best = slot;
        bestScore = score;
      }
    }
    return best?.member;
  }

  /**
   * Up to `n` distinct members in preference order for `key`: the owner first, then
   * where the key would go if the ones before were gone. Use it for replicas and for
   * the next worker to try.
   */
  owners(key: string, n: number = this.#slots.length): M[] {
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new InvalidArgumentError(`Expected \`n\` to be an integer from 0 and up, got \`${n}\` (${typeof n})`);
    }
    if (n === 0 || this.#slots.length === 0) return [];
    if (n === 1) {
      const one = this.owner(key);
      return one === undefined ? [] : [one];
    }
    const ka = this.#hash(key, KEY_SEED_A) >>> 0;
    const kb = this.#hash(key, KEY_SEED_B) >>> 0;
    const scored = this.#slots.map((slot) => ({ member: slot.member, score: this.#score(slot, ka, kb) }));
    scored.sort((x, y) => y.score - x.score || (x.member.id < y.member.id ? -1 : x.member.id > y.member.id ? 1 : 0));
    return scored.slice(0, n).map((s) => s.member);
  }

  /** The member with this id, if it is on the ring. */
  get(id: string): M | undefined {
    return this.#slots.find((s) => s.member.id === id)?.member;
  }

  #score(slot: Slot<M>, ka: number, kb: number): number {
    // Two rounds of a bijective mixer over key hash xor member hash: for a fixed key,
    // distinct members give independent-looking 32-bit draws.
    const h = fmix32(fmix32(ka ^ slot.a) ^ kb ^ slot.b);
    if (!this.#weighted) return h;
    const u = (h + 0.5) / TWO_POW_32; // in (0, 1)
    return slot.weight / -Math.log(u);
  }
}

/**
 * The ring key of one block of an object version. A block is `pagesPerBlock`
 * consecutive pages, so a file's blocks land on different workers while the pages
 * of one block stay together (one worker, one read-ahead).
 *
 * @example
 * ringKey('s3://bucket/big.bin', 'etag', 3)
 */
export function ringKey(url: string, etag: string, blockIndex: number): string {
  if (!Number.isSafeInteger(blockIndex) || blockIndex < 0) {
    throw new InvalidArgumentError(`Expected \`blockIndex\` of ${url} to be an integer from 0 and up, got \`${blockIndex}\` (${typeof blockIndex})`, { url });
  }
  return JSON.stringify([url, etag, blockIndex]);
}

/**
 * Pages per ring block: `blockSize / pageSize`, at least 1.
 *
 * @param blockSize bytes per block. @default 67108864 (64 MiB)
 */
export function pagesPerBlock(pageSize: number = DEFAULT_PAGE_SIZE, blockSize: number = DEFAULT_BLOCK_SIZE): number {
  checkPageSize(pageSize);
  if (!Number.isSafeInteger(blockSize) || blockSize < 1) {
    throw new InvalidArgumentError(`Expected \`blockSize\` to be an integer number of bytes from 1 and up, got \`${blockSize}\` (${typeof blockSize})`);
  }
  return Math.max(1, Math.floor(blockSize / pageSize));
}

/** The block a page belongs to. */
export function blockIndexOfPage(pageIndex: number, pagesInBlock: number): number {
  return Math.floor(pageIndex / pagesInBlock);
}

/** Shorthand: the ring key of the block holding page `pageIndex`. */
export function ringKeyForPage(url: string, etag: string, pageIndex: number, pagesInBlock: number): string {
  return ringKey(url, etag, blockIndexOfPage(pageIndex, pagesInBlock));
}
