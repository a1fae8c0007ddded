import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import { LruPolicy, S3FifoPolicy, createEvictionPolicy, evictionPolicies } from '../../src/cache/eviction.js';
import type { EvictionPolicy, EvictionPolicyName } from '../../src/cache/eviction.js';

/** A cache of unit-size keys driven by a policy: the store's use of it, minus the bytes. */
function simulate(policy: EvictionPolicy, capacity: number, trace: readonly string[]): { hits: number; resident: Set<string> } {
  const resident = new Set<string>();
  let hits = 0;
  for (const key of trace) {
    if (resident.has(key)) {
      hits++;
      policy.touch(key);
      continue;
    }
    while (resident.size + 1 > capacity) {
      const victim = policy.evict();
      if (victim === undefined) break;
      resident.delete(victim);
    }
    resident.add(key);
    policy.insert(key, 1);
  }
  return { hits, resident };
}

function hotThenScan(hot: number, rounds: number, scan: number): string[] {
  const trace: string[] = [];
  for (let r = 0; r < rounds; r++) for (let i = 0; i < hot; i++) trace.push(`hot-${i}`);
  for (let i = 0; i < scan; i++) trace.push(`scan-${i}`);
  return trace;
}

describe('LruPolicy', () => {
  it('evicts the least recently used key first', () => {
    const lru = new LruPolicy();
    for (const k of ['a', 'b', 'c', 'd']) lru.insert(k);
    lru.touch('a');
    lru.touch('c');
    expect([lru.evict(), lru.evict(), lru.evict(), lru.evict(), lru.evict()]).toEqual(['b', 'd', 'a', 'c', undefined]);
  });

  it('forgets removed keys and ignores touches of unknown ones', () => {
    const lru = new LruPolicy();
    lru.insert('a');
    lru.insert('b');
    lru.remove('a');
    lru.touch('zzz');
    expect(lru.size).toBe(1);
    expect(lru.evict()).toBe('b');
    expect(lru.evict()).toBeUndefined();
  });
});

describe('S3FifoPolicy', () => {
  it('keeps a hot set through a one-time scan that flushes LRU', () => {
    const capacity = 100;
    const trace = hotThenScan(30, 5, 1_000);
    const lru = simulate(new LruPolicy(), capacity, trace);
    const s3 = simulate(new S3FifoPolicy(capacity), capacity, trace);
    const hotLeft = (r: Set<string>) => [...r].filter((k) => k.startsWith('hot-')).length;
    expect(hotLeft(lru.resident)).toBe(0);
    expect(hotLeft(s3.resident)).toBe(30);
    // And the hot set hits again after the scan.
    const after = hotThenScan(30, 1, 0);
    const s3Policy = new S3FifoPolicy(capacity);
    const s3Again = simulate(s3Policy, capacity, [...trace, ...after]);
    expect(s3Again.hits).toBe(s3.hits + 30);
  });

  it('hits more than LRU on a hot set mixed with repeated scans', () => {
    // Each round reads a hot set of 50 twice, then scans 150 new keys through a cache of 100:
    // LRU loses the hot set to every scan and hits only on the second pass.
    const capacity = 100;
    const trace: string[] = [];
    for (let round = 0; round < 20; round++) {
      for (let pass = 0; pass < 2; pass++) for (let i = 0; i < 50; i++) trace.push(`hot-${i}`);
      for (let i = 0; i < 150; i++) trace.push(`scan-${round}-${i}`);
    }
    const lru = simulate(new LruPolicy(), capacity, trace);
    const s3 = simulate(new S3FifoPolicy(capacity), capacity, trace);
    expect(lru.hits).toBe(20 * 50);
    expect(s3.hits).toBeGreaterThan(lru.hits * 1.8);
  });

  it('admits a key seen again soon after eviction straight to the main queue', () => {
    const s3 = new S3FifoPolicy(10);
    s3.insert('a', 1);
    expect(s3.evict()).toBe('a'); // never touched: leaves from the small queue, remembered as a ghost
    s3.insert('a', 1); // ghost hit: main queue
    for (let i = 0; i < 5; i++) s3.insert(`s${i}`, 1);
    // The small queue is over its 10% share, so the new, untouched keys go first.
    expect(s3.evict()).toBe('s0');
    expect(s3.size).toBe(5);
  });

  it('refuses a small-queue ratio outside (0, 1)', () => {
    expect(() => new S3FifoPolicy(10, 1)).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_ARGUMENT }));
  });
});

describe.each(Object.keys(evictionPolicies) as EvictionPolicyName[])('%s policy contract', (name) => {
  it('evicts only resident keys, each once, until empty', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('insert' as const), key: fc.integer({ min: 0, max: 30 }), bytes: fc.integer({ min: 1, max: 8 }) }),
      fc.record({ kind: fc.constant('touch' as const), key: fc.integer({ min: 0, max: 30 }) }),
      fc.record({ kind: fc.constant('remove' as const), key: fc.integer({ min: 0, max: 30 }) }),
      fc.record({ kind: fc.constant('evict' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: 1, max: 100 }), (ops, capacity) => {
        const policy = createEvictionPolicy(name, capacity);
        const resident = new Set<string>();
        for (const o of ops) {
          if (o.kind === 'evict') {
            const v = policy.evict();
            if (resident.size === 0) expect(v).toBeUndefined();
            else {
              expect(v !== undefined && resident.has(v)).toBe(true);
              resident.delete(v ?? '');
            }
          } else if (o.kind === 'insert') {
            if (resident.has(String(o.key))) continue; // the store never inserts a resident key
            policy.insert(String(o.key), o.bytes);
            resident.add(String(o.key));
          } else if (o.kind === 'touch') {
            policy.touch(String(o.key));
          } else {
            policy.remove(String(o.key));
            resident.delete(String(o.key));
          }
          expect(policy.size).toBe(resident.size);
        }
        const drained = new Set<string>();
        for (let v = policy.evict(); v !== undefined; v = policy.evict()) {
          expect(drained.has(v)).toBe(false);
          drained.add(v);
        }
        expect(drained).toEqual(resident);
      }),
      { numRuns: 150 },
    );
  });
});

describe('createEvictionPolicy', () => {
  it('builds policies by name or from a factory, and names the choices for anything else', () => {
    expect(createEvictionPolicy('lru', 10).name).toBe('lru');
    expect(createEvictionPolicy('s3fifo', 10).name).toBe('s3fifo');
    const mine = new LruPolicy();
    expect(createEvictionPolicy(() => mine, 10)).toBe(mine);
    expect(() => createEvictionPolicy('belady' as EvictionPolicyName, 10)).toThrow(/'lru', 's3fifo'.*belady/);
    expect(() => createEvictionPolicy('toString' as EvictionPolicyName, 10)).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_ARGUMENT }));
  });
});
