// The front-end's part of Latchkey's bill of materials: every npm package whose code ends up in
// the built bundle (not the build tools), with its version and licence, written as
// `dist/third-party-licenses.json`. The file ships inside the app with the bundle it describes;
// `scripts/sbom` copies it beside the Rust bill of materials. A bundled package without a
// licence fails the build, so nothing unlicensed ships unnoticed.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Plugin } from 'vite';

/** One bundled npm package. */
export interface BundledPackage {
  name: string;
  version: string;
  license: string;
}

const NODE_MODULES = `${path.sep}node_modules${path.sep}`;

/** The directory of the npm package a module id belongs to, or `undefined` for our own code. */
export function packageRoot(id: string): string | undefined {
  const file = id.replace(/^\0/, '').split('?')[0] ?? '';
  const at = file.lastIndexOf(NODE_MODULES);
  if (at < 0) return undefined;
  const rest = file.slice(at + NODE_MODULES.length).split(path.sep);
  const first = rest[0] ?? '';
  const name = first.startsWith('@') ? rest.slice(0, 2) : rest.slice(0, 1);
  return file.slice(0, at + NODE_MODULES.length) + name.join(path.sep);
}

function describe(root: string): BundledPackage {
  const meta = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    name?: string;
    version?: string;
    license?: string | { type?: string };
  };
  const license = typeof meta.license === 'string' ? meta.license : meta.license?.type;
  return {
    name: meta.name ?? path.basename(root),
    version: meta.version ?? 'unknown',
    license: license ?? 'UNKNOWN',
  };
}

/** The Vite plugin. */
export function bundledLicenses(): Plugin {
  return {
    name: 'latchkey-bundled-licenses',
    apply: 'build',
    generateBundle(_options, bundle) {
      const found = new Map<string, BundledPackage>();
      for (const item of Object.values(bundle)) {
        if (item.type !== 'chunk') continue;
        for (const id of item.moduleIds) {
          const root = packageRoot(id);
          if (root && !found.has(root)) found.set(root, describe(root));
        }
      }
      const packages = [...found.values()].sort((a, b) => a.name.localeCompare(b.name));
      const unlicensed = packages.filter((p) => p.license === 'UNKNOWN');
      if (unlicensed.length > 0) {
        this.error(`bundled npm packages without a licence: ${unlicensed.map((p) => p.name).join(', ')}`);
      }
      this.emitFile({
        type: 'asset',
        fileName: 'third-party-licenses.json',
        source: `${JSON.stringify(packages, null, 2)}\n`,
      });
    },
  };
}
