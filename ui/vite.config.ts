/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { bundledLicenses } from './build/licenses';

export default defineConfig({
  plugins: [svelte(), bundledLicenses()],
  clearScreen: false,
  build: { target: 'es2022', outDir: 'dist', emptyOutDir: true, sourcemap: false },
  // Component tests mount Svelte's browser build (the default resolution picks the server one).
  resolve: process.env.VITEST ? { conditions: ['browser'] } : undefined,
  test: { environment: 'jsdom', include: ['src/**/*.test.ts', 'build/**/*.test.ts'] },
});
