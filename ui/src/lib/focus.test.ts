import { describe, expect, it } from 'vitest';
import { focusFirstInvalid } from './focus';

describe('focusFirstInvalid', () => {
  it('focuses the first field marked invalid, in document order', () => {
    document.body.innerHTML = `<form><input id="a"><input id="b" aria-invalid="true"><input id="c" aria-invalid="true"></form>`;
    expect(focusFirstInvalid(document.querySelector('form') ?? undefined)).toBe(true);
    expect(document.activeElement?.id).toBe('b');
  });

  it('leaves the focus where it is when nothing is invalid or there is no form', () => {
    document.body.innerHTML = `<form><input id="a" aria-invalid="false"></form><button id="go">Go</button>`;
    (document.getElementById('go') as HTMLButtonElement).focus();
    expect(focusFirstInvalid(document.querySelector('form') ?? undefined)).toBe(false);
    expect(focusFirstInvalid(undefined)).toBe(false);
    expect(document.activeElement?.id).toBe('go');
  });
});
