/**
 * The plugin's state directory on the host: one directory per published target, named
 * by a hash of the target path, holding the target's record (what was published there
 * and which staging mounts serve it), the staging mount points and the mount's log.
 * Nothing about a volume lives only in the plugin's memory, so a restarted plugin finds
 * every mount again here and in the mount table.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InternalError } from '../errors.js';

/** What a publish asked for; two publishes at one target are compatible when these are equal. */
export interface MountSpec {
  source: string;
  workers?: string | undefined;
  etcd?: string | undefined;
  cluster?: string | undefined;
  readonly: boolean;
  accessMode: string;
  ephemeral: boolean;
}

export interface Staging {
  /** The staging mount point (a `granary mount`), bind-mounted onto the target. */
  dir: string;
  /** Its holder process; 0 while it starts. */
  holderPid: number;
  /**
   * Where its processes run: "moved to DIR" (outside the plugin container's cgroup: it
   * survives a container restart), or "not moved (REASON: detail)" (it does not).
   */
  cgroup?: string | undefined;
}

export interface VolumeRecord {
  version: 1;
  volumeId: string;
  targetPath: string;
  spec: MountSpec;
  /** Staging mounts stacked on the target, oldest first; the last one serves it. */
  stagings: Staging[];
  publishedAt: string;
  /** Times the target was repaired by mounting on top. */
  repairs: number;
}

export function sameSpec(a: MountSpec, b: MountSpec): boolean {
  return (
    a.source === b.source &&
    a.workers === b.workers &&
    a.etcd === b.etcd &&
    a.cluster === b.cluster &&
    a.readonly === b.readonly &&
    a.accessMode === b.accessMode &&
    a.ephemeral === b.ephemeral
  );
}

export class StateDir {
  readonly root: string;
  readonly #volumes: string;

  constructor(root: string) {
    this.root = root;
    this.#volumes = join(root, 'volumes');
    mkdirSync(this.#volumes, { recursive: true, mode: 0o700 });
  }

  /** The directory of a target (created on demand). */
  dirOf(targetPath: string): string {
    return join(this.#volumes, createHash('sha256').update(targetPath).digest('hex').slice(0, 24));
  }

  logFileOf(targetPath: string): string {
    return join(this.dirOf(targetPath), 'mount.log');
  }

  /** A fresh staging mount point for a target (never one used before: an old one may still be detaching). */
  newStagingDir(targetPath: string): string {
    const dir = join(this.dirOf(targetPath), `mnt-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  read(targetPath: string): VolumeRecord | undefined {
    return this.#readFile(join(this.dirOf(targetPath), 'record.json'));
  }

  #readFile(file: string): VolumeRecord | undefined {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const r = JSON.parse(text) as Partial<VolumeRecord>;
    if (r.version !== 1 || typeof r.targetPath !== 'string' || typeof r.volumeId !== 'string' || !r.spec || !Array.isArray(r.stagings)) {
      throw new InternalError(`state record ${file} is not a granary CSI record (version ${String(r.version)})`);
    }
    return r as VolumeRecord;
  }

  /** Write a record atomically (a crash leaves the old one or the new one, never half). */
  write(record: VolumeRecord): void {
    const dir = this.dirOf(record.targetPath);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `record.json.${process.pid}.tmp`);
    writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, join(dir, 'record.json'));
  }

  /** Forget a target: its record, log and (already unmounted) staging directories. */
  remove(targetPath: string): void {
    rmSync(this.dirOf(targetPath), { recursive: true, force: true });
  }

  /** Every record in the state directory. */
  list(): VolumeRecord[] {
    const out: VolumeRecord[] = [];
    for (const name of readdirSync(this.#volumes)) {
      const r = this.#readFile(join(this.#volumes, name, 'record.json'));
      if (r) out.push(r);
    }
    return out;
  }
}
