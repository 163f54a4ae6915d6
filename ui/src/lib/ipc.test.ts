import { afterEach, describe, expect, it } from 'vitest';
import { clearMocks, mockIPC } from '@tauri-apps/api/mocks';
import { ipc } from './ipc';

afterEach(() => clearMocks());

describe('ipc', () => {
  it('sends each command with its typed arguments', async () => {
    const seen: Array<[string, unknown]> = [];
    mockIPC((cmd, args) => {
      seen.push([cmd, args]);
      if (cmd === 'create_client') {
        return { client: { name: 'cursor', services: ['demo'], created_at: 1, last_used_at: null, raw_credentials: false }, token: 'lk_x' };
      }
      return null;
    });
    const created = await ipc.createClient('cursor', ['demo']);
    expect(created.token).toBe('lk_x');
    await ipc.createClient('exec-only', ['demo'], true);
    await ipc.login('sandbox', true);
    await ipc.queryActivity({ service: 'demo', limit: 50 });
    expect(seen).toEqual([
      ['create_client', { name: 'cursor', services: ['demo'], allowRawCredentials: false }],
      ['create_client', { name: 'exec-only', services: ['demo'], allowRawCredentials: true }],
      ['login', { account: 'sandbox', systemBrowser: true }],
      ['query_activity', { filter: { service: 'demo', limit: 50 } }],
    ]);
  });

  it('rejects with {code, message} so the UI can branch on the code', async () => {
    mockIPC(() => {
      throw { code: 'login_required', message: 'Log in first.' };
    });
    await expect(ipc.refreshNow('sandbox')).rejects.toEqual({ code: 'login_required', message: 'Log in first.' });
  });
});
