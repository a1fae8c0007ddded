import { InvalidArgumentError } from '../errors.js';

/**
 * What a caller may know about a key's future, passed through to the policy.
 * Only hint-aware policies read it; LRU and S3-FIFO ignore it.
 */
export interface AccessHint {
  /**
   * The logical time (any monotonic counter the caller keeps, e.g. the loader's
   * position in its epoch plan) at which this key is next expected to be read;
   * `Infinity` when it will not be read again. This is the hook for a
   * "Belady by hinted next use" policy, which evicts the key used furthest ahead.
   */
  nextUse?: number | undefined;
}

/**
 * An eviction policy for one tier of the page store. The store owns the bytes and
 * the budget; the policy only orders keys. All calls are synchronous and O(1)
 * amortised in the built-in policies.
 *
 * Contract: `insert` is called once when a key enters the tier, `touch` on each hit,
 * `remove` when the store drops a key for its own reasons (invalidation, corruption),
 * and `evict` when the store needs room: the policy picks a resident key, forgets it,
 * and returns it (or `undefined` when it holds none). A policy never sees a key twice
 * without a `remove`/`evict` in between.
 */
export interface EvictionPolicy {
  /** The policy's name, as given to `createEvictionPolicy`. */
  readonly name: string;
  /** How many keys it tracks as resident. */
  readonly size: number;
  /** A key of `bytes` bytes entered the tier. */
  insert(key: string, bytes: number, hint?: AccessHint): void;
  /** A resident key was read. Unknown keys are ignored. */
  touch(key: string, hint?: AccessHint): void;
  /** A resident key left the tier other than by eviction. Unknown keys are ignored. */
  remove(key: string): void;
  /** Choose a victim, stop tracking it, and return it; `undefined` when empty. */
  evict(): string | undefined;
}

/**
 * Builds a policy for a tier of `capacityBytes`. Pass one as the store's `policy`
 * option to plug in a policy granary does not ship (a hint-driven Belady, say).
 */
export type EvictionPolicyFactory = (capacityBytes: number) => EvictionPolicy;

/** The names of the built-in policies. */
export type EvictionPolicyName = 'lru' | 's3fifo';

/**
 * Least recently used. A JS `Map` iterates in insertion order, so re-inserting a key
 * on every touch keeps the least recently used key first.
 */
export class LruPolicy implements EvictionPolicy {
  readonly name = 'lru';
  readonly #keys = new Map<string, true>();

  get size(): number {
    return this.#keys.size;
  }

  insert(key: string): void {
    this.#keys.delete(key);
    this.#keys.set(key, true);
  }

  touch(key: string): void {
    if (this.#keys.delete(key)) this.#keys.set(key, true);
  }

  remove(key: string): void {
    this.#keys.delete(key);
  }

  evict(): string | undefined {
    const first = this.#keys.keys().next();
    if (first.done === true) return undefined;
    this.#keys.delete(first.value);
    return first.value;
  }
}

interface FifoEntry {
  bytes: number;
  /** Hits since entering its queue (or since its last second chance), capped at 3. */
  freq: number;
}

/**
 * S3-FIFO (Yang et al., SOSP 2023): a small FIFO probation queue (10% of the bytes),
 * a main FIFO with second chances, and a ghost FIFO of recently evicted keys.
 *
 * Why it is scan resistant: a key read once (a sequential scan, a one-off preload)
 * enters the small queue and leaves it before it can displace anything in the main
 * queue; only keys hit while on probation, or seen again soon after eviction (ghost
 * hits), reach the main queue. LRU, by contrast, lets a scan longer than the cache
 * flush the whole hot set. Chosen over 2Q/SLRU because it needs no tuning beyond the
 * 10% split and touches no list on a hit (just a counter), which matters on the
 * worker's hot path.
 */
export class S3FifoPolicy implements EvictionPolicy {
  readonly name = 's3fifo';
  readonly #smallTarget: number;
  readonly #small = new Map<string, FifoEntry>();
  readonly #main = new Map<string, FifoEntry>();
  /** Keys only; bounded by the number of resident keys. */
  readonly #ghost = new Map<string, true>();
  #smallBytes = 0;

  /**
   * @param capacityBytes the tier's budget; the small queue is allowed `smallRatio` of it.
   * @param smallRatio fraction of the budget for the probation queue. @default 0.1
   */
  constructor(capacityBytes: number, smallRatio = 0.1) {
    if (!(smallRatio > 0 && smallRatio < 1)) {
      throw new InvalidArgumentError(`Expected \`smallRatio\` to be a number between 0 and 1, got \`${smallRatio}\` (${typeof smallRatio})`);
    }
    this.#smallTarget = Math.max(0, capacityBytes) * smallRatio;
  }

  get size(): number {
    return this.#small.size + this.#main.size;
  }

  insert(key: string, bytes: number): void {
    this.remove(key);
    const entry: FifoEntry = { bytes, freq: 0 };
    if (this.#ghost.delete(key)) {
      this.#main.set(key, entry);
    } else {
      this.#small.set(key, entry);
      this.#smallBytes += bytes;
    }
  }

  touch(key: string): void {
    const e = this.#small.get(key) ?? this.#main.get(key);
    if (e !== undefined && e.freq < 3) e.freq++;
  }

  remove(key: string): void {
    const s = this.#small.get(key);
    if (s !== undefined) {
      this.#small.delete(key);
      this.#smallBytes -= s.bytes;
    } else {
      this.#main.delete(key);
    }
  }

  evict(): string | undefined {
    // Every iteration either moves a key from small to main or lowers a counter, so
    // this terminates within (keys x 4) steps.
    for (;;) {
      if (this.#small.size > 0 && (this.#smallBytes >= this.#smallTarget || this.#main.size === 0)) {
        const [key, e] = this.#small.entries().next().value as [string, FifoEntry];
        this.#small.delete(key);
        this.#smallBytes -= e.bytes;
        if (e.freq > 0) {
          e.freq = 0;
          this.#main.set(key, e);
          continue;
        }
        this.#remember(key);
        return key;
      }
      const head = this.#main.entries().next();
      if (head.done === true) return undefined;
      const [key, e] = head.value;
      this.#main.delete(key);
      if (e.freq > 0) {
        e.freq--;
        this.#main.set(key, e);
        continue;
      }
      return key;
    }
  }

  #remember(key: string): void {
    this.#ghost.delete(key);
    this.#ghost.set(key, true);
    const limit = Math.max(1, this.size);
    while (this.#ghost.size > limit) {
      const oldest = this.#ghost.keys().next();
      if (oldest.done === true) break;
      this.#ghost.delete(oldest.value);
    }
  }
}

/** The built-in policies by name. A "belady" entry would be added here. */
export const evictionPolicies: Readonly<Record<EvictionPolicyName, EvictionPolicyFactory>> = {
  lru: () => new LruPolicy(),
  s3fifo: (capacityBytes) => new S3FifoPolicy(capacityBytes),
};

/**
 * A policy by name (`'lru'`, `'s3fifo'`) or from a factory.
 *
 * @example
 * const policy = createEvictionPolicy('s3fifo', 512 * 1024 * 1024);
 */
export function createEvictionPolicy(policy: EvictionPolicyName | EvictionPolicyFactory, capacityBytes: number): EvictionPolicy {
  if (typeof policy === 'function') return policy(capacityBytes);
  if (typeof policy === 'string' && Object.hasOwn(evictionPolicies, policy)) {
    return evictionPolicies[policy](capacityBytes);
  }
  throw new InvalidArgumentError(
    `Expected \`policy\` to be one of ${Object.keys(evictionPolicies).map((n) => `'${n}'`).join(', ')} or a factory function, got \`${String(policy)}\` (${typeof policy})`,
  );
}
