import { mkdtemp, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isGranaryError } from '../../src/errors.js';
import { Dataset } from '../../src/loader/dataset.js';
import { allSettledOrThrow } from '../../src/loader/signals.js';
import { LocalUfs } from '../../src/ufs/local.js';
import { waitFor } from '../support/wait.js';

/**
 * Closing what reads a local directory lets go of every file descriptor under it before
 * `close()` resolves: a read still in flight when a partition's fetch failed or was
 * aborted (one of its sibling reads rejected first) kept its file open after
 * `ds.close()` and `fs.close()`, and `umount` of a FUSE mount then said "target is busy".
 */

const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(files: number, bytes: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'granary-fd-'));
  dirs.push(dir);
  const body = new Uint8Array(bytes).fill(7);
  for (let i = 0; i < files; i++) await writeFile(join(dir, `f${String(i).padStart(4, '0')}.bin`), body);
  return dir;
}

/** This process's open descriptors that point into `dir`. */
async function fdsInto(dir: string): Promise<string[]> {
  const open: string[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target.startsWith(`${dir}/`)) open.push(target);
  }
  return open;
}

describe.skipIf(process.platform !== 'linux')('file descriptors after close (LocalUfs)', () => {
  it.each([
    ['in a loader thread', true],
    ['on this thread', false],
  ])('Dataset.files %s: breaking out of an epoch early, then closing the dataset and the fs, leaves no file open', async (_where, loaderThread) => {
    const dir = await tempDir(256, 64 * 1024);
    for (let round = 0; round < 4; round++) {
      const fs = new LocalUfs({ root: dir });
      const ds = await Dataset.files(LocalUfs.urlOf(`${dir}/`), { fs, filesPerPartition: 4, loaderThread });
      let seen = 0;
      for await (const b of ds.batches({ batchSize: 4, shuffle: true, seed: round, prefetch: 32 })) {
        seen += b.numRows;
        if (seen >= 8) break;
      }
      // A stream closed mid-epoch, with its prefetch window in flight, and never iterated again.
      const stream = ds.batches({ batchSize: 4, shuffle: true, seed: round + 100, prefetch: 32 });
      const it = stream[Symbol.asyncIterator]();
      await it.next();
      await stream.close();
      await ds.close();
      await fs.close();
      expect(await fdsInto(dir)).toEqual([]);
    }
  });

  it('LocalUfs.close() waits for a read in flight to close its descriptor; the read rejects with GRANARY_ERR_CLOSED', async () => {
    const dir = await tempDir(1, 64 * 1024 * 1024);
    const fs = new LocalUfs({ root: dir });
    const reading = fs.read(LocalUfs.urlOf(join(dir, 'f0000.bin')));
    const outcome = reading.then(
      () => 'read',
      (err: unknown) => err,
    );
    await waitFor(async () => (await fdsInto(dir)).length > 0, { what: 'the read to open its file' });
    await fs.close();
    expect(await fdsInto(dir)).toEqual([]);
    const result = await outcome;
    // A read that had all its pieces in before close() saw it may still complete.
    if (result !== 'read') expect(isGranaryError(result) && result.code).toBe('GRANARY_ERR_CLOSED');
    await expect(fs.read(LocalUfs.urlOf(join(dir, 'f0000.bin')))).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
  });

  it('allSettledOrThrow rejects with the first rejection only once every promise has settled', async () => {
    let release!: () => void;
    let lateSettled = false;
    const late = new Promise<number>((resolve) => (release = () => resolve(2))).finally(() => (lateSettled = true));
    const first = new Error('first');
    const all = allSettledOrThrow([Promise.reject(first), late, Promise.reject(new Error('second'))]);
    let allSettled = false;
    void all.catch(() => (allSettled = true));
    await Promise.resolve();
    await new Promise((resolve) => setImmediate(resolve));
    expect(allSettled).toBe(false);
    release();
    await expect(all).rejects.toBe(first);
    expect(lateSettled).toBe(true);
    await expect(allSettledOrThrow([Promise.resolve(1), Promise.resolve(2)])).resolves.toEqual([1, 2]);
  });
});
