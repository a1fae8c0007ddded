/**
 * The faults the chaos soak draws from, each with how it heals: every fault of the
 * fault matrix that leaves the store's contents as they were (an overwrite changes the
 * truth, and a full disk is a worker's setup, so both stay in their own tests).
 */
import { isObjectGet, resetMidBody, slowDown } from '../src/netem/http-faults.js';
import type { FaultCluster, FaultWorker } from '../test/support/fault-epoch.js';

export const FAULT_KINDS = ['worker-kill', 'worker-stall', 'worker-refuse', 'worker-reset', 'etcd-restart', 'store-503', 'store-reset'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** One injected fault: `start` breaks something, `heal` (later in the epoch, or at its end) mends it. */
export interface ActiveFault {
  kind: FaultKind;
  target: string;
  heal(): Promise<void>;
}

/**
 * Inject a fault of `kind` on the cluster (worker faults on worker `worker`). A worker
 * fault on a worker already broken is skipped (returns undefined), so at most one fault
 * holds each worker at a time.
 */
export async function injectFault(c: FaultCluster, kind: FaultKind, worker: FaultWorker, broken: Set<string>): Promise<ActiveFault | undefined> {
  const isWorkerFault = kind.startsWith('worker-');
  if (isWorkerFault && broken.has(worker.id)) return undefined;
  if (kind === 'etcd-restart' && broken.has('etcd')) return undefined;
  const target = isWorkerFault ? worker.id : kind === 'etcd-restart' ? 'etcd' : 'store';
  const done = (heal: () => Promise<void>): ActiveFault => {
    if (target !== 'store') broken.add(target);
    return {
      kind,
      target,
      heal: async () => {
        await heal();
        broken.delete(target);
      },
    };
  };
  switch (kind) {
    case 'worker-kill':
      await worker.kill();
      return done(() => worker.restart());
    case 'worker-stall':
      worker.proxy.stall();
      return done(() => Promise.resolve(worker.proxy.resume()));
    case 'worker-refuse':
      await worker.proxy.refuse(true, 'unlisten');
      return done(() => worker.proxy.refuse(false));
    case 'worker-reset':
      worker.proxy.resetAll();
      return done(() => Promise.resolve());
    case 'etcd-restart':
      await c.etcd.kill();
      return done(() => c.etcd.start());
    case 'store-503':
      c.store.inject(slowDown(), { times: 3, match: isObjectGet });
      return done(() => Promise.resolve());
    case 'store-reset':
      c.store.inject(resetMidBody(), { times: 2, match: isObjectGet });
      return done(() => Promise.resolve());
  }
}
