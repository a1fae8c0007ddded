/**
 * The circuit breakers of one cache client, in shared memory, so every thread that
 * reads through that client (decode threads, the loader thread) sees one breaker per
 * worker: the first thread to fail against a dead worker opens it for all, the others
 * steer around it at once without waiting for a message, and after the cooldown exactly
 * one probe goes out from the whole process. The state machine is `CircuitBreaker`'s
 * (breaker.ts); here each transition runs under a per-worker spin lock in a
 * `SharedArrayBuffer` (held for a few instructions, never across an await).
 *
 * Workers are found by a 64-bit hash of their id in an open-addressed table, so any
 * thread can add a worker it has just learned of without asking the owner. A table
 * that fills up (more workers than `capacity`) gives the extra workers a breaker
 * local to the thread that asked.
 */
import { optionalInt } from '../util/validate.js';
import { CircuitBreaker, type BreakerOptions, type BreakerState } from './breaker.js';

/** What the client asks of a worker's breaker. */
export interface Breaker {
  readonly state: BreakerState;
  /** Whether a request may go to the worker now (in half-open state: one probe at a time, process-wide). */
  allow(): boolean;
  success(): void;
  failure(): void;
}

/** The breakers of one client, by worker id. */
export interface BreakerTable {
  get(id: string): Breaker;
}

/** Called in the thread where a worker's breaker went from closed to open. */
export type TripListener = (workerId: string) => void;

const CLOSED = 0;
const OPEN = 1;
const HALF_OPEN = 2;
const NAMES: readonly BreakerState[] = ['closed', 'open', 'half-open'];

/** Int32 words per slot: lock, state, probe in flight, unused. */
const INTS = 4;
/** Float64 words per slot: open until (ms since epoch), current cooldown (0: the first). */
const FLOATS = 2;
/** Int32 header words: trips, capacity, unused x2. */
const HEADER = 4;
const DEFAULT_CAPACITY = 1024;

function layout(capacity: number): { keys: number; ints: number; floats: number; bytes: number } {
  const keys = HEADER * 4;
  const ints = keys + capacity * 8;
  const floats = ints + capacity * INTS * 4;
  return { keys, ints, floats, bytes: floats + capacity * FLOATS * 8 };
}

/** 64-bit FNV-1a of the id's UTF-16 code units, never 0 (0 marks a free slot). */
function hashId(id: string): bigint {
  let lo = 0x84222325;
  let hi = 0xcbf29ce4;
  for (let i = 0; i < id.length; i++) {
    lo ^= id.charCodeAt(i);
    // Multiply the 64-bit (hi, lo) by the FNV prime 0x100000001b3 in 32-bit halves.
    const l = lo >>> 0;
    const nlo = Math.imul(l, 0x1b3);
    const carry = Math.floor((l * 0x1b3) / 0x100000000);
    hi = (Math.imul(hi, 0x1b3) + Math.imul(l, 0x100) + carry) | 0;
    lo = nlo;
  }
  const h = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
  return BigInt.asIntN(64, h === 0n ? 1n : h);
}

export interface SharedBreakersOptions extends BreakerOptions {
  /** Workers the table can hold. @default 1024 */
  capacity?: number;
}

export class SharedBreakers implements BreakerTable {
  /** The memory every thread's view shares; send it to another thread to make a view there. */
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  readonly #header: Int32Array;
  readonly #keys: BigInt64Array;
  readonly #ints: Int32Array;
  readonly #floats: Float64Array;
  readonly #options: BreakerOptions;
  readonly #cooldownMs: number;
  readonly #maxCooldownMs: number;
  readonly #now: () => number;
  readonly #onTrip: TripListener | undefined;
  readonly #views = new Map<string, Breaker>();

  /** A new table, or (with `buffer`) a view of another thread's table. */
  constructor(options: SharedBreakersOptions = {}, buffer?: SharedArrayBuffer, onTrip?: TripListener) {
    this.#options = options;
    this.#cooldownMs = options.cooldownMs ?? 2000;
    this.#maxCooldownMs = options.maxCooldownMs ?? 30_000;
    this.#now = options.now ?? Date.now;
    this.#onTrip = onTrip;
    if (buffer === undefined) {
      this.capacity = optionalInt('breaker.capacity', options.capacity, DEFAULT_CAPACITY, 1, 1 << 20);
      this.buffer = new SharedArrayBuffer(layout(this.capacity).bytes);
      this.#header = new Int32Array(this.buffer, 0, HEADER);
      this.#header[1] = this.capacity;
    } else {
      this.buffer = buffer;
      this.#header = new Int32Array(buffer, 0, HEADER);
      this.capacity = this.#header[1] as number;
    }
    const l = layout(this.capacity);
    this.#keys = new BigInt64Array(this.buffer, l.keys, this.capacity);
    this.#ints = new Int32Array(this.buffer, l.ints, this.capacity * INTS);
    this.#floats = new Float64Array(this.buffer, l.floats, this.capacity * FLOATS);
  }

  /** Breakers that went from closed to open, in every thread sharing the table. */
  get trips(): number {
    return Atomics.load(this.#header, 0);
  }

  get(id: string): Breaker {
    let b = this.#views.get(id);
    if (b === undefined) {
      const slot = this.#slot(id);
      b = slot < 0 ? new CircuitBreaker(this.#options) : new SlotBreaker(this, slot, id);
      this.#views.set(id, b);
    }
    return b;
  }

  /** The slot of `id`, claimed if it has none; -1 when the table is full. */
  #slot(id: string): number {
    const key = hashId(id);
    const start = Number(BigInt.asUintN(64, key) % BigInt(this.capacity));
    for (let n = 0; n < this.capacity; n++) {
      const i = (start + n) % this.capacity;
      const seen = Atomics.compareExchange(this.#keys, i, 0n, key);
      if (seen === 0n || seen === key) return i;
    }
    return -1;
  }

  // Slot operations, used by SlotBreaker.

  /** @internal */
  stateOf(slot: number): number {
    const s = Atomics.load(this.#ints, slot * INTS + 1);
    return s === OPEN && this.#now() >= (this.#floats[slot * FLOATS] as number) ? HALF_OPEN : s;
  }

  /** @internal */
  allow(slot: number): boolean {
    if (Atomics.load(this.#ints, slot * INTS + 1) === CLOSED) return true;
    return this.#locked(slot, (ints, at, floats, fat) => {
      const s = ints[at + 1];
      if (s === CLOSED) return true;
      if (s === OPEN) {
        if (this.#now() < (floats[fat] as number)) return false;
        Atomics.store(ints, at + 1, HALF_OPEN);
      }
      if (ints[at + 2] !== 0) return false;
      ints[at + 2] = 1;
      return true;
    });
  }

  /** @internal */
  success(slot: number): void {
    // The hot path: a closed breaker stays closed, with nothing to reset.
    if (Atomics.load(this.#ints, slot * INTS + 1) === CLOSED) return;
    this.#locked(slot, (ints, at, floats, fat) => {
      ints[at + 2] = 0;
      floats[fat + 1] = 0;
      Atomics.store(ints, at + 1, CLOSED);
    });
  }

  /** @internal */
  failure(slot: number, id: string): void {
    const tripped = this.#locked(slot, (ints, at, floats, fat) => {
      const s = ints[at + 1];
      const wasProbe = s === HALF_OPEN || (s === OPEN && this.#now() >= (floats[fat] as number));
      let cooldown = (floats[fat + 1] as number) || this.#cooldownMs;
      if (wasProbe) cooldown = Math.min(this.#maxCooldownMs, cooldown * 2);
      floats[fat + 1] = cooldown;
      floats[fat] = this.#now() + cooldown;
      ints[at + 2] = 0;
      Atomics.store(ints, at + 1, OPEN);
      return s === CLOSED;
    });
    if (tripped) {
      Atomics.add(this.#header, 0, 1);
      this.#onTrip?.(id);
    }
  }

  #locked<T>(slot: number, fn: (ints: Int32Array, at: number, floats: Float64Array, fat: number) => T): T {
    const at = slot * INTS;
    // Held for a few instructions by whoever has it: spin rather than wait (the main
    // thread may not Atomics.wait).
    while (Atomics.compareExchange(this.#ints, at, 0, 1) !== 0);
    try {
      return fn(this.#ints, at, this.#floats, slot * FLOATS);
    } finally {
      Atomics.store(this.#ints, at, 0);
    }
  }
}

class SlotBreaker implements Breaker {
  constructor(
    private readonly table: SharedBreakers,
    private readonly slot: number,
    private readonly id: string,
  ) {}

  get state(): BreakerState {
    return NAMES[this.table.stateOf(this.slot)] ?? 'closed';
  }

  allow(): boolean {
    return this.table.allow(this.slot);
  }

  success(): void {
    this.table.success(this.slot);
  }

  failure(): void {
    this.table.failure(this.slot, this.id);
  }
}
