/**
 * What a client does with a part whose bytes failed their page checksums: publish it,
 * and tell the worker which pages were bad so that it drops them (the next read
 * refetches them from the store). The read itself falls back like any worker fault.
 */
import { channel } from 'node:diagnostics_channel';
import type { ChecksumFault } from './page-checksum.js';
import { Paths } from './protocol.js';
import type { WorkerTransport } from './worker-transport.js';

/** Published for every part that failed its checksum: `{ worker, url, etag, pages, reason }`. */
const corruptChannel = channel('granary:client:corrupt');

/** Report a checksum failure to its worker, in the background: a report that fails changes nothing. */
export function reportCorrupt(transport: WorkerTransport, fault: ChecksumFault): void {
  const { worker, url, etag, pages } = fault;
  if (corruptChannel.hasSubscribers) corruptChannel.publish({ worker: worker.id, url, etag, pages, reason: fault.message });
  if (pages.length === 0) return;
  const query = { url, etag, pages: pages.join(',') };
  void transport.send(worker, 'POST', Paths.corrupt, query, undefined).then(
    (res) => res.body.dump(),
    () => undefined,
  );
}
