import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from './licenses';

const nm = (...parts: string[]) => ['', 'app', 'ui', 'node_modules', ...parts].join(path.sep);

describe('packageRoot', () => {
  it('finds the package of a bundled module, scoped or not', () => {
    expect(packageRoot(nm('svelte', 'src', 'internal', 'client', 'index.js'))).toBe(nm('svelte'));
    expect(packageRoot(nm('@tauri-apps', 'api', 'core.js'))).toBe(nm('@tauri-apps', 'api'));
  });

  it('takes the innermost package of a nested node_modules and ignores query suffixes', () => {
    expect(packageRoot(`${nm('a', 'node_modules', 'b', 'index.js')}?v=1`)).toBe(nm('a', 'node_modules', 'b'));
  });

  it('says our own code belongs to no package', () => {
    expect(packageRoot(['', 'app', 'ui', 'src', 'App.svelte'].join(path.sep))).toBeUndefined();
    expect(packageRoot('\0virtual:module')).toBeUndefined();
  });
});
