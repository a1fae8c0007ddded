/**
 * `granary mount` end to end: a real FUSE mount of a prefix in a real s3rver, read by
 * real programs (find, md5sum, tar, dd, python3) and by granary's own loader, every
 * byte compared with the store's.
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountAt } from '../../src/fuse/mount-table.js';
import { createUfs, type UfsRouter } from '../../src/ufs/router.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';
import { waitFor } from '../support/wait.js';
import { alive, cleanupMounts, fuseRunnable, granary, md5, mount, runTool, type Mounted } from './fixture.js';

const PREFIX = 's3://test/data/';
/** key below the prefix -> bytes */
const objects = new Map<string, Uint8Array>();

function bytesOf(seed: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

describe.runIf(fuseRunnable)('granary mount', () => {
  let s3: S3rverHandle;
  let ufs: UfsRouter;
  let work: string;
  let mnt: string;
  let mounted: Mounted;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    s3 = await startS3rver();
    ufs = createUfs({ s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } } });
    objects.set('big.bin', bytesOf(1, 5 * 1024 * 1024 + 123));
    objects.set('empty.bin', new Uint8Array(0));
    for (let i = 0; i < 12; i++) objects.set(`train/class-${i % 3}/img-${String(i).padStart(3, '0')}.jpg`, bytesOf(100 + i, 1000 + i * 3777));
    objects.set('deep/a/b/c/leaf.txt', new TextEncoder().encode('leaf\n'));
    for (const [key, bytes] of objects) await ufs.write(PREFIX + key, bytes);
    work = await mkdtemp(join(tmpdir(), 'granary-fuse-'));
    mnt = join(work, 'mnt');
    await mkdir(mnt);
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1' };
    mounted = await mount(PREFIX, mnt, ['--s3-endpoint', s3.endpoint, '--metadata-ttl', '1s', '--log-file', join(work, 'mount.log')], env);
  }, 120_000);

  afterAll(async () => {
    await cleanupMounts();
    await ufs?.close();
    await s3?.close();
    if (work) await rm(work, { recursive: true, force: true });
  }, 60_000);

  it('is a read-only granary mount', () => {
    expect(mountAt(mnt)).toMatchObject({ fsType: 'fuse.granary', source: PREFIX });
  });

  it('find lists exactly the store keys and the directories they imply', async () => {
    const r = await runTool('find', ['.', '-type', 'f'], { cwd: mnt });
    expect(r.code).toBe(0);
    const found = r.stdout.toString().trim().split('\n').map((l) => l.slice(2)).sort();
    expect(found).toEqual([...objects.keys()].sort());
    const dirs = await runTool('find', ['.', '-type', 'd'], { cwd: mnt });
    expect(dirs.stdout.toString().trim().split('\n').sort()).toEqual(['.', './deep', './deep/a', './deep/a/b', './deep/a/b/c', './train', './train/class-0', './train/class-1', './train/class-2']);
  });

  it('md5sum of every file matches the store bytes', async () => {
    const keys = [...objects.keys()];
    const r = await runTool('md5sum', keys, { cwd: mnt });
    expect(r.code, r.stderr).toBe(0);
    const sums = new Map(r.stdout.toString().trim().split('\n').map((l) => [l.slice(34), l.slice(0, 32)] as const));
    for (const [key, bytes] of objects) expect(sums.get(key), key).toBe(md5(bytes));
  });

  it('stat reports sizes, read-only modes, and ENOENT for names not in the listing', async () => {
    for (const [key, bytes] of objects) {
      const st = await stat(join(mnt, key));
      expect(st.size).toBe(bytes.length);
      expect(st.mode & 0o777).toBe(0o444);
    }
    expect((await stat(join(mnt, 'train'))).isDirectory()).toBe(true);
    await expect(stat(join(mnt, 'no-such-file'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(stat(join(mnt, 'train', 'class-0', 'nope.jpg'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('tar -c of the mount holds every file byte for byte', async () => {
    const out = join(work, 'untar');
    await mkdir(out);
    const tar = await runTool('tar', ['-c', '-f', join(work, 'all.tar'), '-C', mnt, '.']);
    expect(tar.code, tar.stderr).toBe(0);
    const x = await runTool('tar', ['-x', '-f', join(work, 'all.tar'), '-C', out]);
    expect(x.code, x.stderr).toBe(0);
    for (const [key, bytes] of objects) expect(md5(await readFile(join(out, key))), key).toBe(md5(bytes));
  });

  it('dd reads whole files with 1 MiB blocks and ranges with skip/count', async () => {
    const big = objects.get('big.bin') as Uint8Array;
    const whole = await runTool('dd', [`if=${join(mnt, 'big.bin')}`, 'bs=1M', 'status=none']);
    expect(whole.code, whole.stderr).toBe(0);
    expect(md5(whole.stdout)).toBe(md5(big));
    const part = await runTool('dd', [`if=${join(mnt, 'big.bin')}`, 'bs=65536', 'skip=17', 'count=9', 'status=none', 'iflag=direct']);
    expect(part.code, part.stderr).toBe(0);
    expect(md5(part.stdout)).toBe(md5(big.subarray(17 * 65536, 26 * 65536)));
  });

  it('a python3 map-style dataset reads random files and ranges, all matching the store', async () => {
    const script = `
import hashlib, json, os, random, sys
root = sys.argv[1]
paths = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
class MapDataset:
    def __len__(self): return len(paths)
    def __getitem__(self, i):
        with open(os.path.join(root, paths[i]), 'rb') as f:
            return paths[i], f.read()
ds = MapDataset()
rng = random.Random(7)
out = {}
for i in rng.sample(range(len(ds)), len(ds)):
    key, data = ds[i]
    out[key] = hashlib.md5(data).hexdigest()
ranges = []
with open(os.path.join(root, 'big.bin'), 'rb') as f:
    size = os.fstat(f.fileno()).st_size
    for _ in range(20):
        off = rng.randrange(size); n = rng.randrange(1, 300000)
        f.seek(off); ranges.append([off, n, hashlib.md5(f.read(n)).hexdigest()])
print(json.dumps({'files': out, 'ranges': ranges}))
`;
    const r = await runTool('python3', ['-c', script, mnt]);
    expect(r.code, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout.toString()) as { files: Record<string, string>; ranges: [number, number, string][] };
    expect(Object.keys(got.files).sort()).toEqual([...objects.keys()].sort());
    for (const [key, bytes] of objects) expect(got.files[key], key).toBe(md5(bytes));
    const big = objects.get('big.bin') as Uint8Array;
    for (const [off, n, sum] of got.ranges) expect(sum).toBe(md5(big.subarray(off, off + n)));
  });

  it("granary's own loader reads the mount over file:// and yields the store's bytes", async () => {
    const r = await runTool(process.execPath, ['--import', 'tsx', 'test/fuse/loader-child.ts', `file://${mnt}/train/`]);
    expect(r.code, r.stderr).toBe(0);
    const seen = JSON.parse(r.stdout.toString()) as Record<string, string>;
    const train = [...objects].filter(([k]) => k.startsWith('train/'));
    expect(Object.keys(seen).length).toBe(train.length);
    for (const [key, bytes] of train) expect(seen[key.slice('train/'.length)], key).toBe(md5(bytes));
  });

  it('refuses writes, mkdir and rm with EROFS', async () => {
    await expect(writeFile(join(mnt, 'new.txt'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await expect(writeFile(join(mnt, 'big.bin'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await expect(mkdir(join(mnt, 'newdir'))).rejects.toMatchObject({ code: 'EROFS' });
    await expect(unlink(join(mnt, 'big.bin'))).rejects.toMatchObject({ code: 'EROFS' });
    await expect(rm(join(mnt, 'train'), { recursive: true })).rejects.toMatchObject({ code: 'EROFS' });
    const shell = await runTool('sh', ['-c', `touch ${mnt}/t 2>&1; mkdir ${mnt}/d 2>&1; rm -f ${mnt}/big.bin 2>&1; true`]);
    expect(shell.stdout.toString().match(/Read-only file system/g)?.length).toBe(3);
  });

  it('shows an overwritten object once the TTL has passed, never a mix of versions', async () => {
    const key = 'train/class-0/img-000.jpg';
    const before = objects.get(key) as Uint8Array;
    const after = bytesOf(999, 70_000);
    const old = await readFile(join(mnt, key));
    expect(md5(old)).toBe(md5(before));
    await ufs.write(PREFIX + key, after);
    objects.set(key, after);
    const seen = new Set<string>();
    await waitFor(
      async () => {
        const now = md5(await readFile(join(mnt, key)));
        seen.add(now);
        return now === md5(after);
      },
      { timeoutMs: 30_000, intervalMs: 50, what: 'the new version to appear through the mount' },
    );
    expect([...seen].every((s) => s === md5(before) || s === md5(after))).toBe(true);
    expect((await stat(join(mnt, key))).size).toBe(after.length);
  });

  it('granary umount unmounts it and the holder exits', async () => {
    const r = await granary(['umount', mnt]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`unmounted ${mnt}`);
    expect(mountAt(mnt)).toBeUndefined();
    await waitFor(() => !alive(mounted.holderPid), { timeoutMs: 20_000, what: 'the holder to exit after umount' });
    const again = await granary(['umount', mnt]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('GRANARY_ERR_INVALID_ARGUMENT');
  });
});
