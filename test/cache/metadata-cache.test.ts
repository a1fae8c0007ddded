import { describe, expect, it } from 'vitest';
import { MetadataCache, type MetadataSource } from '../../src/cache/metadata-cache.js';
import type { FileInfo } from '../../src/ufs/types.js';

const TTL = 60_000;

/** A source whose answers are as old as `age` says, counting what it is asked. */
function source(files: () => FileInfo[]): MetadataSource & { calls: { stat: string[]; list: string[] }; age: number } {
  const s = {
    calls: { stat: [] as string[], list: [] as string[] },
    age: 0,
    async stat(url: string) {
      s.calls.stat.push(url);
      const f = files().find((x) => x.url === url) ?? { url, size: 1, etag: 'head' };
      return { value: f, fetchedAt: Date.now() - s.age };
    },
    async list(prefix: string) {
      s.calls.list.push(prefix);
      await new Promise((r) => setImmediate(r));
      return { value: files().filter((f) => f.url.startsWith(prefix)), fetchedAt: Date.now() - s.age };
    },
  };
  return s;
}

const file = (i: number, etag = 'v1'): FileInfo => ({ url: `s3://b/p/${i}`, size: 100 + i, etag });

describe('MetadataCache', () => {
  it('answers stat from a listing, and revalidates expired listed entries with one shared LIST, never a HEAD', async () => {
    let files = Array.from({ length: 50 }, (_, i) => file(i));
    const src = source(() => files);
    const cache = new MetadataCache({ ttlMs: TTL, source: src });
    // The first listing is already past the TTL when it arrives.
    src.age = TTL + 1;
    await cache.list('s3://b/p/');
    src.age = 0;
    files = files.map((f) => ({ ...f, etag: 'v2' }));
    const infos = await Promise.all(files.map((f) => cache.stat(f.url)));
    expect(infos.every((e) => e.value.etag === 'v2')).toBe(true);
    expect(src.calls.list).toEqual(['s3://b/p/', 's3://b/p/']);
    expect(src.calls.stat).toEqual([]);
    // Fresh now: no request at all.
    await cache.stat(file(3).url);
    expect(src.calls.list.length + src.calls.stat.length).toBe(2);
  });

  it('sends a HEAD for a URL no listing holds, and for maxAgeMs 0', async () => {
    const files = [file(1)];
    const src = source(() => files);
    const cache = new MetadataCache({ ttlMs: TTL, source: src });
    await cache.list('s3://b/p/');
    expect((await cache.stat('s3://b/q/other')).value.etag).toBe('head');
    expect(src.calls.stat).toEqual(['s3://b/q/other']);
    await cache.stat(file(1).url, 0);
    expect(src.calls.stat).toEqual(['s3://b/q/other', file(1).url]);
    expect(src.calls.list).toHaveLength(1);
  });

  it('forgets objects a new listing no longer holds', async () => {
    let files = [file(1), file(2)];
    const src = source(() => files);
    const cache = new MetadataCache({ ttlMs: TTL, source: src });
    await cache.list('s3://b/p/');
    files = [file(1)];
    await cache.list('s3://b/p/', 0);
    expect(cache.peek(file(2).url)).toBeUndefined();
    expect(cache.peek(file(1).url)?.etag).toBe('v1');
  });

  it('expire() makes the next stat ask again, keeping the entry for its size meanwhile', async () => {
    const src = source(() => [file(1)]);
    const cache = new MetadataCache({ ttlMs: TTL, source: src });
    await cache.list('s3://b/p/');
    cache.expire(file(1).url);
    expect(cache.peek(file(1).url)?.size).toBe(101);
    await cache.stat(file(1).url);
    // The listing itself is still fresh, so the one URL is fetched alone.
    expect(src.calls.stat).toEqual([file(1).url]);
  });
});
