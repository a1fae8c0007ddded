import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalUfs } from '../../src/ufs/local.js';
import { createUfs } from '../../src/ufs/router.js';
import type { FileInfo } from '../../src/ufs/types.js';
import { describeConformance } from './conformance.js';

const href = (p: string): string => pathToFileURL(p).href;

async function collect(it: AsyncIterable<FileInfo>): Promise<FileInfo[]> {
  const out: FileInfo[] = [];
  for await (const f of it) out.push(f);
  return out;
}

describeConformance('local files', { writable: true, buckets: false, credentials: false }, async () => {
  const root = await mkdtemp(join(tmpdir(), 'granary-local-conf-'));
  const ufs = new LocalUfs({ root, fsync: false });
  return {
    ufs,
    base: `${href(join(root, 'c'))}/`,
    urlFor: (rel) => href(join(root, 'c', rel)),
    listable: true,
    async close() {
      await ufs.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

// The same suite through the scheme router, as `createUfs()` users meet it.
describeConformance('local files through createUfs', { writable: true, buckets: false, credentials: false }, async () => {
  const root = await mkdtemp(join(tmpdir(), 'granary-router-conf-'));
  const ufs = createUfs({ file: { root, fsync: false } });
  return {
    ufs,
    base: `${href(join(root, 'c'))}/`,
    urlFor: (rel) => href(join(root, 'c', rel)),
    listable: true,
    async close() {
      await ufs.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

describe('LocalUfs', () => {
  let top: string;
  let root: string;
  let outside: string;
  let ufs: LocalUfs;
  const u = (rel: string): string => href(join(root, rel));

  beforeAll(async () => {
    top = await mkdtemp(join(tmpdir(), 'granary-local-'));
    root = join(top, 'root');
    outside = join(top, 'outside');
    await mkdir(join(root, 'dir'), { recursive: true });
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, 'secret.txt'), 'top secret');
    await writeFile(join(root, 'dir', 'inside.txt'), 'inside');
    await symlink(join(outside, 'secret.txt'), join(root, 'link-out.txt'));
    await symlink(outside, join(root, 'dir-out'));
    await symlink(join(root, 'dir', 'inside.txt'), join(root, 'link-in.txt'));
    ufs = new LocalUfs({ root });
  });

  afterAll(async () => {
    await ufs.close();
    await rm(top, { recursive: true, force: true });
  });

  it('refuses `..` segments, however encoded, with GRANARY_ERR_PATH_ESCAPE naming the URL', async () => {
    for (const bad of [
      `${u('dir')}/../../outside/secret.txt`,
      `${u('dir')}/%2e%2e/%2E%2E/outside/secret.txt`,
      `${u('dir')}/.%2e/x`,
      `${u('dir')}/%2e./inside.txt`,
      `${u('dir')}/../dir/inside.txt`,
    ]) {
      const err = await ufs.read(bad, 0, 1).catch((e: unknown) => e as Error & { code: string; url: string });
      expect(err).toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE', url: bad });
      expect((err as Error).message).toContain(bad);
      await expect(ufs.stat(bad)).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
      await expect(ufs.write(bad, Buffer.from('x'))).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    }
    expect(await readFile(join(outside, 'secret.txt'), 'utf8')).toBe('top secret');
  });

  it('refuses absolute paths outside the root for every operation', async () => {
    const out = href(join(outside, 'secret.txt'));
    await expect(ufs.stat(out)).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(ufs.read(out, 0, 3)).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(ufs.write(href(join(outside, 'new.txt')), Buffer.from('x'))).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(ufs.delete(out)).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(collect(ufs.list(`${href(outside)}/`))).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    // A sibling whose name merely starts with the root's name is outside too.
    await expect(ufs.stat(href(`${root}-sibling/x`))).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(new LocalUfs({ root }).stat('file:///etc/passwd')).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    expect(await readFile(join(outside, 'secret.txt'), 'utf8')).toBe('top secret');
  });

  it('refuses symlinks that lead out of the root, for files and directories', async () => {
    await expect(ufs.stat(u('link-out.txt'))).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(ufs.read(u('link-out.txt'), 0, 3)).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(ufs.read(u('dir-out/secret.txt'), 0, 3)).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(ufs.write(u('dir-out/planted.txt'), Buffer.from('x'))).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(ufs.write(u('dir-out/deeper/planted.txt'), Buffer.from('x'))).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    await expect(collect(ufs.list(`${u('dir-out')}/`))).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    expect(await readdir(outside)).toEqual(['secret.txt']);
  });

  it('follows symlinks that stay inside the root, and lists only files inside it', async () => {
    expect(Buffer.from(await ufs.read(u('link-in.txt'), 0, 6)).toString()).toBe('inside');
    const listed = (await collect(ufs.list(`${href(root)}/`))).map((f) => f.url);
    expect(listed).toEqual([u('dir/inside.txt'), u('link-in.txt')]);
  });

  it('lists keys that start with a prefix that is not a directory', async () => {
    const local = new LocalUfs({ root, fsync: false });
    for (const rel of ['p/ab', 'p/abc/d', 'p/ab-x', 'p/b', 'p/a']) await local.write(u(rel), Buffer.from(rel));
    expect((await collect(local.list(u('p/ab')))).map((f) => f.url)).toEqual([u('p/ab'), u('p/ab-x'), u('p/abc/d')]);
    expect((await collect(local.list(u('p/nothing')))).length).toBe(0);
    expect((await collect(local.list(`${u('no-such-dir')}/`))).length).toBe(0);
  });

  it('changes the version on an atomic replace even with the same size and mtime', async () => {
    const f = u('ver/same.bin');
    const v1 = await ufs.write(f, Buffer.from('AAAA'));
    const v2 = await ufs.write(f, Buffer.from('BBBB'));
    const when = new Date(Math.floor(v1.mtimeMs ?? 0));
    await utimes(join(root, 'ver/same.bin'), when, when);
    const now = await ufs.stat(f);
    expect(now.size).toBe(v1.size);
    expect(now.etag).not.toBe(v1.etag);
    expect(now.etag).not.toBe(v2.etag);
    await expect(ufs.read(f, 0, 4, { etag: v1.etag })).rejects.toMatchObject({ code: 'GRANARY_ERR_VERSION_CHANGED' });
    // Touching the file (same bytes, new mtime) is a new version too.
    await utimes(join(root, 'ver/same.bin'), new Date(), new Date(Date.now() + 5000));
    await expect(ufs.read(f, 0, 4, { etag: now.etag })).rejects.toMatchObject({ code: 'GRANARY_ERR_VERSION_CHANGED' });
  });

  it('never returns bytes of another version than the etag it was given, while the file is being replaced', async () => {
    const local = new LocalUfs({ root, fsync: false });
    const f = u('race/obj.bin');
    const size = 256 * 1024;
    const fillOf = new Map<string, number>();
    const first = await local.write(f, Buffer.alloc(size, 0));
    fillOf.set(first.etag, 0);
    let stop = false;
    const writer = (async () => {
      for (let i = 1; !stop; i++) {
        const info = await local.write(f, Buffer.alloc(size, i % 251));
        fillOf.set(info.etag, i % 251);
      }
    })();
    const seen: { etag: string; fill: number }[] = [];
    let ok = 0;
    let changed = 0;
    try {
      for (let i = 0; i < 150; i++) {
        const info = await local.stat(f);
        try {
          const bytes = await local.read(f, 0, size, { etag: info.etag });
          const fill = bytes[0] ?? -1;
          expect(bytes.every((b) => b === fill)).toBe(true);
          seen.push({ etag: info.etag, fill });
          ok++;
        } catch (err) {
          expect(err).toMatchObject({ code: 'GRANARY_ERR_VERSION_CHANGED' });
          changed++;
        }
      }
    } finally {
      stop = true;
      await writer;
    }
    // Every successful read returned exactly the bytes of the version it asked for.
    for (const s of seen) expect(fillOf.get(s.etag)).toBe(s.fill);
    expect(ok + changed).toBe(150);
  });

  it('leaves the old version and no temp file when a streamed write fails or is aborted', async () => {
    const f = u('atomic/a.bin');
    await ufs.write(f, Buffer.from('old'));
    const failing = (async function* () {
      yield Buffer.from('new-part-1');
      throw new Error('source broke');
    })();
    await expect(ufs.write(f, failing)).rejects.toThrow('source broke');
    const ac = new AbortController();
    const aborting = (async function* () {
      yield Buffer.from('new-part-1');
      ac.abort(new Error('write aborted'));
      yield Buffer.from('new-part-2');
    })();
    await expect(ufs.write(f, aborting, { signal: ac.signal })).rejects.toThrow('write aborted');
    expect(await readFile(join(root, 'atomic/a.bin'), 'utf8')).toBe('old');
    expect(await readdir(join(root, 'atomic'))).toEqual(['a.bin']);
    await expect(ufs.write(f, 'text' as unknown as Uint8Array)).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_ARGUMENT' });
  });

  it('creates parent directories, refuses to write over a directory, and deletes idempotently', async () => {
    const info = await ufs.write(u('deep/er/still/file.txt'), Buffer.from('x'));
    expect(info.url).toBe(u('deep/er/still/file.txt'));
    expect((await stat(join(root, 'deep/er/still'))).isDirectory()).toBe(true);
    await expect(ufs.write(u('deep/er'), Buffer.from('x'))).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_URL' });
    await expect(ufs.write(`${u('deep')}/`, Buffer.from('x'))).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_URL' });
    await expect(ufs.stat(u('deep/er'))).rejects.toMatchObject({ code: 'GRANARY_ERR_NOT_FOUND' });
    await ufs.delete(u('deep/er/still/file.txt'));
    await ufs.delete(u('deep/er/still/file.txt'));
    await ufs.delete(u('never/existed/at/all.txt'));
  });

  it('maps permission errors to GRANARY_ERR_ACCESS_DENIED', async () => {
    await writeFile(join(root, 'locked.txt'), 'locked');
    await chmod(join(root, 'locked.txt'), 0o000);
    try {
      if (process.getuid?.() !== 0) {
        await expect(ufs.read(u('locked.txt'), 0, 1)).rejects.toMatchObject({ code: 'GRANARY_ERR_ACCESS_DENIED', url: u('locked.txt') });
        return;
      }
      // root reads any file: run the same read as `nobody` in a child process.
      await chmod(top, 0o755);
      await chmod(root, 0o755);
      const script = join(top, 'as-nobody.ts');
      const local = new URL('../../src/ufs/local.ts', import.meta.url).href;
      await writeFile(
        script,
        `import { LocalUfs } from ${JSON.stringify(local)};\n` +
          `new LocalUfs({ root: ${JSON.stringify(root)} }).read(${JSON.stringify(u('locked.txt'))}, 0, 1)` +
          `.then(() => console.log('{"code":"resolved"}'), (e) => console.log(JSON.stringify(e)));\n`,
      );
      await chmod(script, 0o644);
      const out = await new Promise<string>((resolve, reject) => {
        execFile(process.execPath, ['--import', 'tsx', script], { uid: 65534, gid: 65534, cwd: process.cwd() }, (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
        );
      });
      expect(JSON.parse(out.trim().split('\n').pop() ?? '{}')).toMatchObject({ code: 'GRANARY_ERR_ACCESS_DENIED', url: u('locked.txt') });
    } finally {
      await chmod(join(root, 'locked.txt'), 0o644);
    }
  });

  it('rejects other schemes, remote hosts and malformed file URLs with coded errors', async () => {
    await expect(ufs.stat('s3://bucket/key')).rejects.toMatchObject({ code: 'GRANARY_ERR_UNSUPPORTED_SCHEME' });
    await expect(ufs.stat(`file://fileserver${root}/x`)).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_URL' });
    await expect(ufs.stat(`${u('dir')}/a%2Fb`)).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_URL' });
    await expect(ufs.stat(`${u('dir')}/a%00b`)).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_URL' });
    await expect(ufs.stat(`${u('dir/inside.txt')}?v=1`)).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_URL' });
    expect(() => new LocalUfs({ root: '' })).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_INVALID_ARGUMENT' }) as Error);
    // file://localhost/ is the same file, reported under its canonical URL.
    expect((await ufs.stat(`file://localhost${join(root, 'dir/inside.txt')}`)).url).toBe(u('dir/inside.txt'));
  });

  it('counts requests and bytes, and is routed to by createUfs', async () => {
    const local = new LocalUfs({ root });
    await local.stat(u('dir/inside.txt'));
    await local.read(u('dir/inside.txt'), 1, 3);
    await local.write(u('count/x.bin'), Buffer.from('12345'));
    await collect(local.list(`${u('count')}/`));
    await local.delete(u('count/x.bin'));
    expect(local.requestCounts()).toEqual({ list: 1, stat: 1, get: 1, put: 1, delete: 1, bytesRead: 3, bytesWritten: 5 });
    const router = createUfs({ file: { root } });
    expect(Buffer.from(await router.read(u('dir/inside.txt'), 0, 6)).toString()).toBe('inside');
    await expect(router.stat(href(join(outside, 'secret.txt')))).rejects.toMatchObject({ code: 'GRANARY_ERR_PATH_ESCAPE' });
    expect(router.requestCounts().get).toBe(1);
    await router.close();
  });

  it('throws GRANARY_ERR_CLOSED after close, and closes idempotently', async () => {
    const local = new LocalUfs({ root });
    await local.close();
    await local.close();
    await expect(local.stat(u('dir/inside.txt'))).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
    await expect(collect(local.list(`${href(root)}/`))).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
  });
});
