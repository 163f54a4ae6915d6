import { describe, expect, it } from 'vitest';
import { FALLBACK_LANGUAGE, guardNavigatorLanguage, usableLanguage } from './locale';

describe('usableLanguage', () => {
  it('keeps a valid tag', () => {
    expect(usableLanguage('de-DE')).toBe('de-DE');
    expect(usableLanguage('fr')).toBe('fr');
  });
  it('replaces the POSIX locale and other non-tags', () => {
    for (const bad of ['C', 'en_US.UTF-8', 'c.utf8', '', undefined, null]) {
      expect(usableLanguage(bad)).toBe(FALLBACK_LANGUAGE);
    }
  });
});

describe('guardNavigatorLanguage', () => {
  it('makes Intl usable when the platform reports "C"', () => {
    const nav = {} as Navigator;
    Object.defineProperty(nav, 'language', { get: () => 'C', configurable: true });
    Object.defineProperty(nav, 'languages', { get: () => ['C'], configurable: true });
    expect(() => new Intl.NumberFormat(nav.language)).toThrow(RangeError);
    expect(guardNavigatorLanguage(nav)).toBe(true);
    expect(nav.language).toBe(FALLBACK_LANGUAGE);
    expect(nav.languages).toEqual([FALLBACK_LANGUAGE]);
    expect(() => new Intl.NumberFormat(nav.language)).not.toThrow();
  });
  it('leaves a valid language alone', () => {
    const nav = {} as Navigator;
    Object.defineProperty(nav, 'language', { get: () => 'de-DE', configurable: true });
    expect(guardNavigatorLanguage(nav)).toBe(false);
    expect(nav.language).toBe('de-DE');
  });
});
