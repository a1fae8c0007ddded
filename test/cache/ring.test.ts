import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import { murmur3 } from '../../src/cache/hash.js';
import { DEFAULT_BLOCK_SIZE, HashRing, blockIndexOfPage, pagesPerBlock, ringKey, ringKeyForPage } from '../../src/cache/ring.js';
import type { RingMember } from '../../src/cache/ring.js';

const MiB = 1024 * 1024;

function members(ids: readonly string[]): RingMember[] {
  return ids.map((id, i) => ({ id, url: `http://127.0.0.1:${7000 + i}` }));
}

function keys(count: number, salt = ''): string[] {
  return Array.from({ length: count }, (_, i) => ringKey(`s3://bucket/${salt}train/part-${i >> 4}.parquet`, `etag-${salt}`, i & 15));
}

const idArb = (min: number, max: number) => fc.uniqueArray(fc.string({ minLength: 1, maxLength: 24 }), { minLength: min, maxLength: max });

describe('murmur3', () => {
  it('matches the reference MurmurHash3 x86_32 vectors', () => {
    expect(murmur3('', 0)).toBe(0);
    expect(murmur3('', 1)).toBe(0x514e28b7);
    expect(murmur3('hello', 0)).toBe(0x248bfa47);
    expect(murmur3('abc', 0)).toBe(0xb3dd93fa);
    expect(murmur3('The quick brown fox jumps over the lazy dog', 0x9747b28c)).toBe(0x2fa826cd);
  });
});

describe('HashRing', () => {
  const keys100k = keys(100_000);

  it('balances 100k keys over 10 workers within 15% of the mean', () => {
    fc.assert(
      fc.property(idArb(10, 10), (ids) => {
        const ring = new HashRing(members(ids));
        const counts = new Map<string, number>();
        for (const k of keys100k) {
          const id = ring.owner(k)?.id ?? '';
          counts.set(id, (counts.get(id) ?? 0) + 1);
        }
        expect(counts.size).toBe(10);
        const max = Math.max(...counts.values());
        expect(max / (keys100k.length / 10)).toBeLessThanOrEqual(1.15);
      }),
      { numRuns: 4 },
    );
  });

  it('gives workers keys in proportion to their weights', () => {
    const ring = new HashRing([
      { id: 'small', url: 'a', weight: 1 },
      { id: 'big', url: 'b', weight: 3 },
      { id: 'mid', url: 'c', weight: 2 },
    ]);
    const counts: Record<string, number> = { small: 0, big: 0, mid: 0 };
    const ks = keys100k.slice(0, 60_000);
    for (const k of ks) {
      const id = ring.owner(k)?.id ?? '';
      counts[id] = (counts[id] ?? 0) + 1;
    }
    expect((counts.small ?? 0) / ks.length).toBeCloseTo(1 / 6, 1);
    expect((counts.mid ?? 0) / ks.length).toBeCloseTo(2 / 6, 1);
    expect((counts.big ?? 0) / ks.length).toBeCloseTo(3 / 6, 1);
  });

  it('moves at most 1.3/(N+1) of the keys when a worker joins, all of them to the new worker', () => {
    const ks = keys(20_000, 'join/');
    fc.assert(
      fc.property(idArb(2, 17), (ids) => {
        const [added, ...rest] = ids as [string, ...string[]];
        const before = new HashRing(members(rest));
        const after = new HashRing(members([...rest, added]));
        let moved = 0;
        let movedElsewhere = 0;
        for (const k of ks) {
          const b = after.owner(k)?.id;
          if (before.owner(k)?.id !== b) {
            moved++;
            if (b !== added) movedElsewhere++;
          }
        }
        expect(movedElsewhere).toBe(0);
        expect(moved / ks.length).toBeLessThanOrEqual(1.3 / (rest.length + 1));
      }),
      { numRuns: 12 },
    );
  });

  it('moves only the departed worker’s keys when a worker leaves, each to its next choice', () => {
    const ks = keys(20_000, 'leave/');
    fc.assert(
      fc.property(idArb(2, 16), fc.nat(), (ids, pick) => {
        const removed = ids[pick % ids.length] ?? '';
        const before = new HashRing(members(ids));
        const after = new HashRing(members(ids.filter((id) => id !== removed)));
        let wrong = 0;
        for (const k of ks) {
          const [first, second] = before.owners(k, 2);
          const expected = first?.id === removed ? second?.id : first?.id;
          if (after.owner(k)?.id !== expected) wrong++;
        }
        expect(wrong).toBe(0);
      }),
      { numRuns: 12 },
    );
  });

  it('gives the same owners whatever the order of the member list', () => {
    const ks = keys(2_000, 'order/');
    fc.assert(
      fc.property(
        idArb(1, 12).chain((ids) => fc.tuple(fc.constant(ids), fc.shuffledSubarray(ids, { minLength: ids.length, maxLength: ids.length }))),
        ([ids, shuffled]) => {
          const a = new HashRing(members(ids));
          const b = new HashRing(members(shuffled));
          const differ = ks.filter((k) => b.owners(k, 3).map((m) => m.id).join('\n') !== a.owners(k, 3).map((m) => m.id).join('\n'));
          expect(differ).toEqual([]);
        },
      ),
      { numRuns: 30 },
    );
  });

  it('lists distinct owners in preference order, the owner first', () => {
    fc.assert(
      fc.property(idArb(0, 8), fc.string(), fc.nat({ max: 10 }), (ids, key, n) => {
        const ring = new HashRing(members(ids));
        const list = ring.owners(key, n);
        expect(list).toHaveLength(Math.min(n, ids.length));
        expect(new Set(list.map((m) => m.id)).size).toBe(list.length);
        if (n > 0) expect(list[0]).toBe(ring.owner(key));
        // The preference list is the owner sequence as members leave one by one.
        if (list.length >= 2) {
          const without = new HashRing(ring.members.filter((m) => m.id !== list[0]?.id));
          expect(without.owner(key)).toBe(list[1]);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('owns nothing when empty', () => {
    const ring = new HashRing([]);
    expect(ring.owner('k')).toBeUndefined();
    expect(ring.owners('k', 3)).toEqual([]);
    expect(ring.size).toBe(0);
  });

  it('keeps the placements of earlier releases (a new hash would remap every cache)', () => {
    const ring = new HashRing(Array.from({ length: 5 }, (_, i) => ({ id: `worker-${i}`, url: `http://127.0.0.1:${7000 + i}` })));
    const placements: [string, string[]][] = [
      [ringKey('s3://bucket/a.parquet', 'e1', 0), ['worker-0', 'worker-2', 'worker-4']],
      [ringKey('s3://bucket/a.parquet', 'e1', 1), ['worker-3', 'worker-2', 'worker-4']],
      [ringKey('s3://bucket/b.parquet', 'e2', 0), ['worker-2', 'worker-4', 'worker-0']],
      [ringKey('file:///data/ü.bin', '10-1700000000000', 7), ['worker-1', 'worker-2', 'worker-3']],
      ['plain-key', ['worker-0', 'worker-3', 'worker-1']],
    ];
    for (const [key, expected] of placements) expect(ring.owners(key, 3).map((m) => m.id)).toEqual(expected);
    const weighted = new HashRing([
      { id: 'a', url: 'x', weight: 1 },
      { id: 'b', url: 'y', weight: 3 },
    ]);
    expect(['k1', 'k2', 'k3', 'k4', 'k5'].map((k) => weighted.owner(k)?.id)).toEqual(['b', 'a', 'b', 'b', 'b']);
  });

  it('computes the same owners in another process', async () => {
    const ids = ['w-α', 'w-b', 'w-c', '10.0.0.4:7070', 'w-e', 'w-f', 'w-g'];
    const ks = [...keys(500, 'child/'), '', 'ünïcödé', 'x'.repeat(1000)];
    const ring = new HashRing(members(ids));
    const fixture = fileURLToPath(new URL('./fixtures/ring-owners.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', fixture], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    child.stdin.end(JSON.stringify({ members: members(ids), keys: ks, n: 3 }));
    const code = await exited;
    expect(err).toBe('');
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual(ks.map((k) => ring.owners(k, 3).map((m) => m.id)));
  });

  it('refuses duplicate ids, empty ids and bad weights with a coded error', () => {
    expect(() => new HashRing(members(['a', 'a']))).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_ARGUMENT }));
    expect(() => new HashRing(members(['']))).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_ARGUMENT }));
    expect(() => new HashRing([{ id: 'a', url: 'u', weight: 0 }])).toThrow(/weight/);
    expect(() => new HashRing([{ id: 'a', url: 'u', weight: Number.NaN }])).toThrow(/weight/);
    expect(() => new HashRing(members(['a'])).owners('k', -1)).toThrow(/`n`/);
  });
});

describe('ringKey and blocks', () => {
  it('keeps the pages of one block together and spreads a large file over the workers', () => {
    const perBlock = pagesPerBlock(MiB, DEFAULT_BLOCK_SIZE);
    expect(perBlock).toBe(64);
    const ring = new HashRing(members(Array.from({ length: 10 }, (_, i) => `w${i}`)));
    const url = 's3://bucket/huge.bin';
    // 16 GiB file: 256 blocks of 64 pages.
    const blockOwners = new Set<string>();
    for (let block = 0; block < 256; block++) {
      const owner = ring.owner(ringKey(url, 'e', block))?.id ?? '';
      blockOwners.add(owner);
      for (const page of [block * perBlock, block * perBlock + perBlock - 1]) {
        expect(blockIndexOfPage(page, perBlock)).toBe(block);
        expect(ring.owner(ringKeyForPage(url, 'e', page, perBlock))?.id).toBe(owner);
      }
    }
    expect(blockOwners.size).toBe(10);
  });

  it('puts each version of a file under its own key', () => {
    expect(ringKey('s3://b/k', 'v1', 0)).not.toBe(ringKey('s3://b/k', 'v2', 0));
    expect(ringKey('s3://b/k', 'v1', 0)).not.toBe(ringKey('s3://b/k', 'v1', 1));
    // No separator games: URL and ETag boundaries are unambiguous.
    expect(ringKey('s3://b/k","x', 'y', 0)).not.toBe(ringKey('s3://b/k', 'x","y', 0));
  });

  it('sizes blocks from the page size and refuses nonsense', () => {
    expect(pagesPerBlock(4 * MiB, 64 * MiB)).toBe(16);
    expect(pagesPerBlock(128 * MiB, 64 * MiB)).toBe(1);
    expect(() => pagesPerBlock(MiB, 0)).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_ARGUMENT }));
    expect(() => ringKey('s3://b/k', 'e', -1)).toThrow(/blockIndex/);
  });
});
