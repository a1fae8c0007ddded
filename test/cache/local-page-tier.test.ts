import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { LocalPageTier } from '../../src/cache/local-page-tier.js';
import { ErrorCodes } from '../../src/errors.js';
import { MemoryUfs } from '../../src/ufs/memory.js';

const KiB = 1024;

describe('LocalPageTier over any store', () => {
  it('reads whole pages once from the inner store and serves repeats from memory', async () => {
    const inner = new MemoryUfs();
    const data = randomBytes(10 * KiB + 7);
    const { etag } = await inner.write('s3://b/x.bin', data);
    await using tier = new LocalPageTier(inner, { memoryBytes: 64 * KiB, pageSize: 4 * KiB });
    const before = inner.requestCounts().get;
    expect(Buffer.from(await tier.read('s3://b/x.bin', 100, 5000, { etag })).equals(data.subarray(100, 5100))).toBe(true);
    expect(inner.requestCounts().get - before).toBe(2);
    expect(Buffer.from(await tier.read('s3://b/x.bin', 4096, 4096, { etag })).equals(data.subarray(4096, 8192))).toBe(true);
    expect(Buffer.from(await tier.read('s3://b/x.bin', 8000, data.length - 8000, { etag })).equals(data.subarray(8000))).toBe(true);
    // Pages 0 and 1 came back from the tier; only page 2 (the short last one) was new.
    expect(inner.requestCounts().get - before).toBe(3);
    expect(tier.stats().hits).toBe(2);
  });

  it('keys pages by version, so an overwrite is never served from the old pages', async () => {
    const inner = new MemoryUfs();
    await inner.write('s3://b/y.bin', Buffer.alloc(8 * KiB, 1));
    await using tier = new LocalPageTier(inner, { memoryBytes: 64 * KiB, pageSize: 4 * KiB });
    expect((await tier.read('s3://b/y.bin', 0, 10))[0]).toBe(1);
    await tier.write('s3://b/y.bin', Buffer.alloc(8 * KiB, 2));
    expect((await tier.read('s3://b/y.bin', 0, 10))[0]).toBe(2);
  });

  it('refuses calls after close with GRANARY_ERR_CLOSED and leaves the inner store open', async () => {
    const inner = new MemoryUfs();
    const { etag } = await inner.write('s3://b/z.bin', Buffer.alloc(100, 3));
    const tier = new LocalPageTier(inner, { memoryBytes: 64 * KiB });
    await tier.read('s3://b/z.bin', 0, 10, { etag });
    await tier.close();
    await tier.close();
    await expect(tier.read('s3://b/z.bin', 0, 10, { etag })).rejects.toMatchObject({ code: ErrorCodes.CLOSED });
    expect((await inner.read('s3://b/z.bin', 0, 1))[0]).toBe(3);
  });
});
