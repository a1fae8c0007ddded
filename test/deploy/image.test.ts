import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IMAGE } from '../../deploy/kubernetes/generator/names.js';
import { allObjects, at, containers, label, list } from './support.js';

const root = join(import.meta.dirname, '..', '..');
const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8');
const dockerignore = readFileSync(join(root, '.dockerignore'), 'utf8').split('\n');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines: { node: string }; bin: Record<string, string> };

describe('the image the manifests run', () => {
  it('builds on a Node.js the package supports, with FUSE, from a clean npm ci', () => {
    const bases = [...dockerfile.matchAll(/^FROM node:(\d+)-slim/gm)].map((m) => Number(m[1]));
    expect(bases.length).toBe(2);
    const min = Number(/>=(\d+)/.exec(pkg.engines.node)?.[1]);
    for (const major of bases) expect(major).toBeGreaterThanOrEqual(min);
    expect(dockerfile).toMatch(/apt-get install [^\n]*fuse3/);
    expect(dockerfile).toMatch(/npm ci --ignore-scripts\n/);
    expect(dockerfile).toMatch(/npm run build/);
  });

  it('puts the package\'s `granary` bin on PATH, the command every granary container runs', () => {
    const bin = pkg.bin.granary?.replace(/^\.\//, '');
    expect(dockerfile).toContain(`ln -s /app/${bin ?? ''} /usr/local/bin/granary`);
    const granary = allObjects()
      .flatMap((f) => (['DaemonSet', 'StatefulSet'].includes(label(f.object.kind)) ? containers(f.object) : []))
      .filter((c) => c.image === IMAGE.ref);
    expect(granary.length).toBe(2);
    for (const c of granary) expect(list(c.command)).toEqual(['granary']);
  });

  it('sends only the build\'s inputs to the image build', () => {
    expect(dockerignore[dockerignore.findIndex((l) => !l.startsWith('#'))]).toBe('*');
    for (const p of ['!package.json', '!package-lock.json', '!tsconfig.json', '!tsconfig.build.json', '!src/', '!proto/']) expect(dockerignore).toContain(p);
  });

  it('runs unprivileged containers as the image\'s own user', () => {
    expect(dockerfile).toMatch(/^USER node$/m);
    for (const { object } of allObjects()) {
      if (!['DaemonSet', 'StatefulSet'].includes(label(object.kind))) continue;
      for (const c of containers(object)) {
        if (c.image !== IMAGE.ref || at(c, 'securityContext', 'privileged') === true) continue;
        expect(at(c, 'securityContext', 'runAsUser')).toBe(1000);
      }
    }
  });
});
