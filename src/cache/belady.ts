import type { AccessHint, EvictionPolicy, EvictionPolicyFactory } from './eviction.js';

/** Where the policy learns each key's next use: `HintRegistry.nextUse`. */
export type NextUse = (key: string) => number;

/**
 * Belady's policy by hinted next use, across all hinting jobs: evict the page no job
 * will read again (the least recently used of those) and, only when every resident
 * page has a hinted use, the one whose next use is furthest. With no hints at all it
 * is exactly LRU.
 *
 * Why unhinted pages go first: a page a job read and will not read again this epoch is
 * dead weight for this epoch, while a page any job has announced is a hit to come. With
 * each job hinting its whole epoch, this keeps the pages still to be read and turns
 * the cache into the optimum for shuffled epochs (about cache/dataset hits per epoch)
 * instead of LRU's near-zero reuse.
 *
 * Cost: `evict` and `victim` walk resident keys in LRU order and stop at the first
 * unhinted one: O(1) with no hints, O(hinted pages before it in LRU order) with hints,
 * O(resident pages) when every resident page is hinted. Each step is one
 * `nextUse` lookup (O(hinting jobs)).
 * `AccessHint` values passed by callers are ignored: the registry is the source.
 */
export class BeladyPolicy implements EvictionPolicy {
  readonly name = 'belady';
  readonly #keys = new Map<string, true>();
  readonly #nextUse: NextUse;

  constructor(nextUse: NextUse) {
    this.#nextUse = nextUse;
  }

  get size(): number {
    return this.#keys.size;
  }

  insert(key: string, _bytes?: number, _hint?: AccessHint): void {
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
    const v = this.victim();
    if (v !== undefined) this.#keys.delete(v.key);
    return v?.key;
  }

  /** The key `evict` would pick now, and its next use (`Infinity`: unhinted). */
  victim(): { key: string; nextUse: number } | undefined {
    let best: string | undefined;
    let bestUse = -1;
    for (const key of this.#keys.keys()) {
      const use = this.#nextUse(key);
      if (use === Infinity) return { key, nextUse: use };
      if (use > bestUse) {
        best = key;
        bestUse = use;
      }
    }
    return best === undefined ? undefined : { key: best, nextUse: bestUse };
  }
}

/**
 * A factory for the page store's `policy` option. It remembers the policies it built
 * (memory tier first, then disk), so the worker can ask the memory tier's victim when
 * deciding whether to admit a page.
 */
export function beladyPolicy(nextUse: NextUse): EvictionPolicyFactory & { readonly built: BeladyPolicy[] } {
  const built: BeladyPolicy[] = [];
  const factory = (): BeladyPolicy => {
    const p = new BeladyPolicy(nextUse);
    built.push(p);
    return p;
  };
  return Object.assign(factory, { built });
}
