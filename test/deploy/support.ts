/** Helpers for the deploy/kubernetes suites: the generated objects as JSON, and kubectl. */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { manifestFiles, objectJson } from '../../deploy/kubernetes/generator/manifests.js';
import type { JsonObject, JsonValue } from '../../deploy/kubernetes/generator/yaml.js';
import { requireOrSkip, whichBinary } from '../support/services.js';

export const DEPLOY_DIR = join(import.meta.dirname, '..', '..', 'deploy', 'kubernetes');

const kubectlPath = whichBinary('kubectl');
/** Whether `kubectl` can run here (else the suite skips with a reason, unless GRANARY_REQUIRE_SERVICES=1). */
export const kubectlAvailable = (): boolean =>
  requireOrSkip('kubectl', kubectlPath !== undefined, 'binary `kubectl` not on PATH (it renders the kustomizations offline)');

export async function kubectl(args: readonly string[]): Promise<string> {
  if (kubectlPath === undefined) throw new Error('kubectl is not installed');
  const { stdout } = await promisify(execFile)(kubectlPath, [...args], { maxBuffer: 64 * 1024 * 1024, env: { ...process.env, KUBECONFIG: '/dev/null' } });
  return stdout;
}

/** Several JSON documents written one after another (kubectl's `-o json` of a multi-document file). */
export function parseJsonStream(text: string): JsonValue[] {
  const out: JsonValue[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{' || c === '[') {
      if (depth++ === 0) start = i;
    } else if (c === '}' || c === ']') {
      if (--depth === 0) out.push(JSON.parse(text.slice(start, i + 1)) as JsonValue);
    }
  }
  return out;
}

export interface Found {
  file: string;
  object: JsonObject;
}

/** Every generated object, validated, with the file it is written to. */
export function allObjects(): Found[] {
  return manifestFiles().flatMap((f) => f.objects.map((m) => ({ file: f.path, object: objectJson(m) })));
}

export function isObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The value at a path of keys and indices, or undefined. */
export function at(v: JsonValue | undefined, ...path: (string | number)[]): JsonValue | undefined {
  let cur = v;
  for (const p of path) {
    if (typeof p === 'number') cur = Array.isArray(cur) ? cur[p] : undefined;
    else cur = isObject(cur) ? cur[p] : undefined;
  }
  return cur;
}

export function str(v: JsonValue | undefined): string {
  if (typeof v !== 'string') throw new Error(`expected a string, got ${JSON.stringify(v)}`);
  return v;
}

export function list(v: JsonValue | undefined): JsonValue[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new Error(`expected a list, got ${JSON.stringify(v)}`);
  return v;
}

export function one(kind: string, name: string, namespace?: string): JsonObject {
  const hits = allObjects().filter(
    ({ object: o }) => o.kind === kind && at(o, 'metadata', 'name') === name && (namespace === undefined || at(o, 'metadata', 'namespace') === namespace),
  );
  if (hits.length !== 1) throw new Error(`expected one ${kind} ${namespace ?? '*'}/${name}, found ${hits.length}`);
  return (hits[0] as Found).object;
}

export function ofKind(kind: string): JsonObject[] {
  return allObjects()
    .map((f) => f.object)
    .filter((o) => o.kind === kind);
}

/** The pod template spec of a workload, or the spec of a Pod. */
export function podSpec(o: JsonObject): JsonObject {
  const spec = o.kind === 'Pod' ? at(o, 'spec') : at(o, 'spec', 'template', 'spec');
  if (!isObject(spec)) throw new Error(`${label(o.kind)} has no pod spec`);
  return spec;
}

export function containers(o: JsonObject, withInit = false): JsonObject[] {
  const spec = podSpec(o);
  return [...(withInit ? list(spec.initContainers) : []), ...list(spec.containers)].filter(isObject);
}

export function container(o: JsonObject, name: string): JsonObject {
  const c = containers(o, true).find((x) => x.name === name);
  if (c === undefined) throw new Error(`no container ${name} in ${label(o.kind)} ${label(at(o, 'metadata', 'name'))}`);
  return c;
}

/** `--flag=value` arguments as a map (flag without the dashes). */
export function flags(args: JsonValue | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const a of list(args)) {
    const m = /^--([^=]+)=(.*)$/s.exec(str(a));
    if (m?.[1] !== undefined && m[2] !== undefined) out.set(m[1], m[2]);
  }
  return out;
}

export function volume(o: JsonObject, name: string): JsonObject {
  const v = list(podSpec(o).volumes).find((x) => isObject(x) && x.name === name);
  if (!isObject(v)) throw new Error(`no volume ${name}`);
  return v;
}

/** A value for a message: strings as they are, anything else as JSON. */
export function label(v: unknown): string {
  return typeof v === 'string' ? v : (JSON.stringify(v) ?? 'undefined');
}
