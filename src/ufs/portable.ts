/**
 * How a store client describes itself so that another thread can rebuild it: a small,
 * open protocol. A client class implements `[toPortable]()`, returning plain data
 * `{ kind, options, share? }`; a rebuilder registered under the same `kind` turns that
 * data back into a client. `src/ufs/rebuilders.ts` and `src/cache/rebuilders.ts` register
 * the built-in kinds; the loader knows only this module.
 */
import { InvalidArgumentError } from '../errors.js';
import type { UnderFileSystem } from './types.js';

/** The method a client implements to describe itself (see `PortableSpec`). */
export const toPortable: unique symbol = Symbol.for('granary.toPortable');

/**
 * A structured-clone-able description of a store client: only primitives, arrays and
 * plain objects. `specOf` returns one, `fromSpec` builds a client from it.
 */
export interface PortableSpec {
  /** Which rebuilder builds it (`registerRebuilder`). */
  kind: string;
  /** The client's options, as plain data. */
  options: unknown;
  /**
   * State the rebuilt client joins rather than builds afresh, when it is built in the
   * same process (a cache client's membership and breakers: src/cache/membership-port.ts).
   */
  share?: unknown;
}

/** A client that can be rebuilt in another thread. */
export interface Portable {
  /**
   * Its description, or undefined when it holds what cannot cross a thread (a function,
   * a live connection). A subclass that does not define its own gets no description:
   * it may behave differently from the class it extends.
   */
  [toPortable](): PortableSpec | undefined;
}

/** Builds a client from the spec its `[toPortable]()` returned. The caller owns and closes it. */
export type Rebuilder = (spec: PortableSpec) => UnderFileSystem;

const rebuilders = new Map<string, Rebuilder>();

/** Make `fromSpec` build specs of `kind` with `rebuild`. Registering a kind twice keeps the last. */
export function registerRebuilder(kind: string, rebuild: Rebuilder): void {
  rebuilders.set(kind, rebuild);
}

/** Nesting deeper than this is not options; it is refused rather than walked. */
const MAX_DEPTH = 32;

/** Whether `v` is only primitives, arrays and plain objects (no functions, class instances, cycles). */
function isPlainData(v: unknown, depth = 0): boolean {
  if (v === null || v === undefined) return true;
  const t = typeof v;
  if (t === 'string' || t === 'number' || t === 'boolean' || t === 'bigint') return true;
  if (t !== 'object' || depth >= MAX_DEPTH) return false;
  if (Array.isArray(v)) return v.every((x) => isPlainData(x, depth + 1));
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return false;
  if (Object.getOwnPropertySymbols(v).length > 0) return false;
  return Object.values(v as Record<string, unknown>).every((x) => isPlainData(x, depth + 1));
}

/** Whether `v` looks like a spec (a `kind` string), as opposed to options or a live client. */
export function isPortableSpec(v: unknown): v is PortableSpec {
  return typeof v === 'object' && v !== null && typeof (v as { kind?: unknown }).kind === 'string' && 'options' in v;
}

/**
 * The description of `fs` (a plain copy), or undefined when it has none: it does not
 * implement `[toPortable]`, inherits it from a class it extends, or describes itself with
 * something that is not plain data.
 */
export function specOf(fs: unknown): PortableSpec | undefined {
  if (typeof fs !== 'object' || fs === null) return undefined;
  const proto: unknown = Object.getPrototypeOf(fs);
  if (typeof proto !== 'object' || proto === null || !Object.prototype.hasOwnProperty.call(proto, toPortable)) return undefined;
  const describe = (fs as Partial<Portable>)[toPortable];
  if (typeof describe !== 'function') return undefined;
  const spec = describe.call(fs);
  if (!isPortableSpec(spec) || !isPlainData(spec)) return undefined;
  return structuredClone(spec);
}

/** A new client built from `spec` by the rebuilder registered for its kind. */
export function fromSpec(spec: PortableSpec): UnderFileSystem {
  const kind: unknown = (spec as { kind?: unknown } | null)?.kind;
  const rebuild = typeof kind === 'string' ? rebuilders.get(kind) : undefined;
  if (rebuild === undefined) {
    const known = [...rebuilders.keys()].sort().join(', ');
    throw new InvalidArgumentError(`Expected a store spec of kind ${known || '(none registered)'}, got kind \`${String(kind)}\``);
  }
  return rebuild(spec);
}
