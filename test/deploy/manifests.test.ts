import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Pod, Service } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { manifestFiles, objectJson, renderAll } from '../../deploy/kubernetes/generator/manifests.js';
import { allObjects, at, DEPLOY_DIR, isObject, kubectl, kubectlAvailable, parseJsonStream, label } from './support.js';

function yamlFilesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name))
    .map((e) => relative(DEPLOY_DIR, join(e.parentPath, e.name)))
    .sort();
}

describe('deploy/kubernetes manifests', () => {
  it('validates every generated object against Kubernetes\' schema', () => {
    const objects = manifestFiles().flatMap((f) => f.objects);
    expect(objects.length).toBeGreaterThan(15);
    for (const m of objects) expect(() => m.validate(), `${m.kind} ${m.metadata?.name ?? ''}`).not.toThrow();
  });

  it('has a model that rejects a value of the wrong type and a required field left out', () => {
    const badPort = new Service({ metadata: { name: 's' }, spec: { ports: [{ port: 'http' as unknown as number }] } });
    expect(() => badPort.validate()).toThrow();
    const noImage = new Pod({ metadata: { name: 'p' }, spec: { containers: [{ image: 'i' } as { name: string; image: string }] } });
    expect(() => noImage.validate()).toThrow(/name/);
  });

  it('has models whose types refuse a misspelled field', () => {
    // The compiler is the check here (npm run typecheck): validate() alone lets unknown fields through.
    // @ts-expect-error `imagePullPolicyy` is no field of a container
    const pod = new Pod({ metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'i', imagePullPolicyy: 'Always' }] } });
    expect(() => pod.validate()).not.toThrow();
  });

  it('commits exactly what the generator writes (npm run deploy:generate)', () => {
    const rendered = renderAll();
    expect(yamlFilesUnder(DEPLOY_DIR)).toEqual([...rendered.keys()].sort());
    for (const [path, text] of rendered) {
      expect(readFileSync(join(DEPLOY_DIR, path), 'utf8'), `deploy/kubernetes/${path} differs from the generator's output: run npm run deploy:generate`).toBe(text);
    }
  });

  it('names every namespaced object\'s namespace and gives every object a unique kind, namespace and name', () => {
    const seen = new Set<string>();
    for (const { file, object } of allObjects()) {
      const clusterScoped = ['Namespace', 'CSIDriver', 'PersistentVolume'].includes(label(object.kind));
      const ns = at(object, 'metadata', 'namespace');
      expect(clusterScoped ? ns === undefined : typeof ns === 'string', `${file}: ${label(object.kind)} namespace`).toBe(true);
      const key = `${label(object.kind)}/${label(ns)}/${label(at(object, 'metadata', 'name'))}`;
      expect(seen.has(key), key).toBe(false);
      seen.add(key);
    }
  });

  describe.runIf(kubectlAvailable())('read back by kubectl', () => {
    it('parses every committed file into exactly the generated objects', async () => {
      for (const f of manifestFiles()) {
        const text = await kubectl(['label', '--local', '-f', join(DEPLOY_DIR, f.path), '-o', 'json', 'granary-readback=1']);
        const back = parseJsonStream(text).map((o) => {
          const labels = at(o, 'metadata', 'labels');
          if (isObject(labels)) delete labels['granary-readback'];
          return o;
        });
        expect(back, f.path).toEqual(f.objects.map(objectJson));
      }
    });
  });
});
