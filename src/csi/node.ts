/**
 * The Node service's work, independent of gRPC: publish a volume on a target (a
 * `granary mount` on a staging directory, bind-mounted read-only onto the target),
 * repair a target whose mount died by mounting a new one on top, unpublish, and report
 * a volume's usage and condition. Every fact is read back from the state directory and
 * the mount table; the only thing in memory is a lock per target.
 */
import { mkdirSync, rmdirSync } from 'node:fs';
import { AlreadyExistsError, InvalidArgumentError, NotFoundError, UnavailableError } from '../errors.js';
import { FS_TYPE, mountAt } from '../fuse/mount-table.js';
import { moveToMountCgroup } from './cgroup.js';
import { checkHealth, type Health } from './health.js';
import { bindOnto, isHolderOf, makePrivate, startMount, unmountOnce, type MounterOptions } from './mounter.js';
import type { NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest, NodeUnpublishVolumeRequest } from './proto.js';
import { sameSpec, type StateDir, type Staging, type VolumeRecord } from './state.js';
import { checkPath, publishSpec, redactor, requireField, secretEnv } from './validate.js';

export interface NodeServiceOptions {
  nodeId: string;
  /** NodeGetInfo's max_volumes_per_node; 0: no limit. */
  maxVolumes: number;
  state: StateDir;
  mounter: MounterOptions;
  /** How long a health check (statfs in a child) may take before the mount counts as hung. */
  healthTimeoutMs: number;
  log: (line: string) => void;
}

/** Layers a target may hold before unpublish gives up (each repair adds one). */
const MAX_LAYERS = 64;

export class NodeService {
  readonly #o: NodeServiceOptions;
  readonly #locks = new Map<string, Promise<unknown>>();

  constructor(o: NodeServiceOptions) {
    this.#o = o;
  }

  get nodeId(): string {
    return this.#o.nodeId;
  }

  get maxVolumes(): number {
    return this.#o.maxVolumes;
  }

  /** One operation at a time per target: the kubelet may retry while a slow mount is still starting. */
  async #locked<T>(target: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(target) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(fn);
    this.#locks.set(target, run);
    try {
      return await run;
    } finally {
      if (this.#locks.get(target) === run) this.#locks.delete(target);
    }
  }

  async publish(req: NodePublishVolumeRequest): Promise<void> {
    const rpc = 'NodePublishVolume';
    const volumeId = requireField(req.volume_id, 'volume_id', rpc);
    const target = checkPath(req.target_path, 'target_path', rpc);
    const spec = publishSpec(req);
    const env = secretEnv(req.secrets);
    const redact = redactor(Object.values(req.secrets));
    await this.#locked(target, async () => {
      const record = this.#o.state.read(target);
      if (!record) {
        const top = mountAt(target);
        if (top) throw new AlreadyExistsError(`${rpc}: ${target} already holds a ${top.fsType} mount of ${top.source} that this plugin did not make`);
        mkdirSync(target, { recursive: true, mode: 0o750 });
        const fresh: VolumeRecord = { version: 1, volumeId, targetPath: target, spec, stagings: [], publishedAt: new Date().toISOString(), repairs: 0 };
        await this.#mountOnto(fresh, env, redact);
        this.#o.log(`published volume ${volumeId} (${spec.source}${spec.ephemeral ? ', ephemeral' : ''}) on ${target}`);
        return;
      }
      if (record.volumeId !== volumeId || !sameSpec(record.spec, spec)) {
        throw new AlreadyExistsError(`${rpc}: ${target} is already published with volume ${record.volumeId} (${record.spec.source}); this call asks for volume ${volumeId} (${spec.source}) or other arguments`);
      }
      const why = await this.#brokenBecause(record);
      if (why === undefined) return;
      this.#o.log(`repairing ${target} (volume ${volumeId}): ${why}; mounting a new mount on top of it`);
      record.repairs += 1;
      await this.#mountOnto(record, env, redact);
      this.#o.log(`repaired ${target} (volume ${volumeId}, repair ${record.repairs})`);
    });
  }

  /** Why a published target needs a new mount, or undefined when it serves. */
  async #brokenBecause(record: VolumeRecord): Promise<string | undefined> {
    const top = mountAt(record.targetPath);
    if (top?.fsType !== FS_TYPE) return top ? `its top mount is ${top.fsType}, not granary's` : 'nothing is mounted there (the node restarted?)';
    const live = record.stagings.at(-1);
    const health = await checkHealth(record.targetPath, this.#o.healthTimeoutMs);
    if (health.state !== 'healthy') return health.message;
    if (!live || !isHolderOf(live.holderPid, live.dir)) return `its holder process ${String(live?.holderPid)} is gone (nothing would replace its serving process)`;
    return undefined;
  }

  /** Start a mount on a new staging directory and bind it on top of the target; then drop older stagings. */
  async #mountOnto(record: VolumeRecord, env: Record<string, string>, redact: (s: string) => string): Promise<void> {
    const { state, mounter } = this.#o;
    const target = record.targetPath;
    const staging = { dir: state.newStagingDir(target), holderPid: 0 };
    record.stagings.push(staging);
    state.write(record);
    try {
      staging.holderPid = await startMount(mounter, record.spec, staging.dir, state.logFileOf(target), env, redact);
      state.write(record);
      this.#leaveContainer(record, staging);
      state.write(record);
      await makePrivate(mounter, staging.dir);
      await bindOnto(mounter, staging.dir, target);
    } catch (err) {
      await this.#dropStaging(staging.dir);
      record.stagings.pop();
      if (record.stagings.length === 0 && mountAt(target) === undefined) {
        state.remove(target);
        removeDir(target);
      } else state.write(record);
      throw err;
    }
    // The target keeps its own reference to any mount under the new one; the old staging mounts are no longer needed.
    for (const old of record.stagings.slice(0, -1)) await this.#dropStaging(old.dir);
    record.stagings = [staging];
    state.write(record);
  }

  /** Move the mount's processes out of the plugin container's cgroup, before the target sees the mount. */
  #leaveContainer(record: VolumeRecord, staging: Staging): void {
    const { mounter } = this.#o;
    const r = moveToMountCgroup(mounter.mountCgroup, staging.holderPid);
    if (r.moved) {
      staging.cgroup = `moved to ${r.where.join(', ')}`;
      return;
    }
    staging.cgroup = `not moved (${r.reason}: ${r.detail})`;
    const line = `volume ${record.volumeId} on ${record.targetPath}: holder pid ${staging.holderPid} ${staging.cgroup}; this mount does not survive a restart of the plugin's container`;
    if (mounter.requireMountCgroup) throw new UnavailableError(`${line} (--require-mount-cgroup: not publishing it)`);
    if (r.reason !== 'disabled') this.#o.log(`warning: ${line}`);
  }

  async #dropStaging(dir: string): Promise<void> {
    for (let i = 0; i < MAX_LAYERS && mountAt(dir) !== undefined; i++) {
      await unmountOnce(this.#o.mounter, dir, true).catch((err: unknown) => this.#o.log(`unmounting staging ${dir}: ${String(err)}`));
    }
    try {
      removeDir(dir);
    } catch (err) {
      this.#o.log(String(err));
    }
  }

  async unpublish(req: NodeUnpublishVolumeRequest): Promise<void> {
    const rpc = 'NodeUnpublishVolume';
    const volumeId = requireField(req.volume_id, 'volume_id', rpc);
    const target = checkPath(req.target_path, 'target_path', rpc);
    await this.#locked(target, async () => {
      const record = this.#o.state.read(target);
      if (record && record.volumeId !== volumeId) throw new NotFoundError(`${rpc}: ${target} holds volume ${record.volumeId}, not ${volumeId}`);
      let layers = 0;
      for (let top = mountAt(target); top && layers < MAX_LAYERS; top = mountAt(target), layers++) {
        if (!record && top.fsType !== FS_TYPE) {
          this.#o.log(`${target} holds a ${top.fsType} mount this plugin did not make: left alone`);
          break;
        }
        const health = await checkHealth(target, this.#o.healthTimeoutMs);
        const how = await unmountOnce(this.#o.mounter, target, health.state !== 'healthy');
        if (how === 'detached lazily') this.#o.log(`${target}: ${health.state === 'healthy' ? 'busy' : health.state} mount detached lazily`);
      }
      for (const s of record?.stagings ?? []) await this.#dropStaging(s.dir);
      if (mountAt(target) === undefined) removeDir(target);
      this.#o.state.remove(target);
      if (record || layers > 0) this.#o.log(`unpublished volume ${volumeId} from ${target} (${layers} mount layer${layers === 1 ? '' : 's'})`);
    });
  }

  async stats(req: NodeGetVolumeStatsRequest): Promise<NodeGetVolumeStatsResponse> {
    const rpc = 'NodeGetVolumeStats';
    const volumeId = requireField(req.volume_id, 'volume_id', rpc);
    const path = checkPath(req.volume_path, 'volume_path', rpc);
    const record = this.#o.state.read(path);
    if (!record || record.volumeId !== volumeId) throw new NotFoundError(`${rpc}: volume ${volumeId} is not published at ${path}`);
    const top = mountAt(path);
    if (top?.fsType !== FS_TYPE) return abnormal(`nothing of granary's is mounted at ${path}; the next NodePublishVolume mounts it again`);
    const health: Health = await checkHealth(path, this.#o.healthTimeoutMs);
    if (health.state === 'absent') throw new NotFoundError(`${rpc}: ${health.message}`);
    if (health.state !== 'healthy') return abnormal(`${health.message}; the next NodePublishVolume mounts a new mount on top`);
    const u = health.usage;
    const usage: NodeGetVolumeStatsResponse['usage'] = [
      { unit: 'BYTES', total: u.bytesTotal, used: u.bytesTotal - u.bytesFree, available: u.bytesAvailable },
      { unit: 'INODES', total: u.inodesTotal, used: u.inodesTotal - u.inodesFree, available: u.inodesFree },
    ];
    const live = record.stagings.at(-1);
    if (!live || !isHolderOf(live.holderPid, live.dir)) {
      return { usage, volume_condition: { abnormal: true, message: `serving, but its holder process ${String(live?.holderPid)} is gone: a crash of the serving process would not be repaired until the next NodePublishVolume` } };
    }
    const survives = live.cgroup === undefined || live.cgroup.startsWith('moved') ? '' : `; its processes are ${live.cgroup}: it does not survive a restart of the plugin's container`;
    return { usage, volume_condition: { abnormal: false, message: `serving ${record.spec.source} (holder pid ${live.holderPid}, ${record.repairs} repair${record.repairs === 1 ? '' : 's'})${survives}` } };
  }

  /** At start: report what the state directory holds, and forget records of mounts that never came up. */
  adopt(): { adopted: number; forgotten: number } {
    let adopted = 0;
    let forgotten = 0;
    for (const r of this.#o.state.list()) {
      const top = mountAt(r.targetPath);
      const live = r.stagings.at(-1);
      if (!top && (!live || mountAt(live.dir) === undefined) && (live?.holderPid ?? 0) === 0) {
        this.#o.state.remove(r.targetPath);
        forgotten++;
        continue;
      }
      adopted++;
      const holder = live && isHolderOf(live.holderPid, live.dir) ? `holder pid ${live.holderPid} running` : 'holder gone: the next NodePublishVolume repairs it';
      this.#o.log(`adopted volume ${r.volumeId} on ${r.targetPath} (${r.spec.source}; ${top ? 'mounted' : 'not mounted'}; ${holder})`);
    }
    return { adopted, forgotten };
  }
}

function abnormal(message: string): NodeGetVolumeStatsResponse {
  return { usage: [], volume_condition: { abnormal: true, message } };
}

function removeDir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new InvalidArgumentError(`cannot remove ${dir}: ${code ?? String(err)}`, { cause: err });
  }
}
