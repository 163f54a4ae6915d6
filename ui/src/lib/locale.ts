// WebKitGTK reports the POSIX locale as the page's language: under LANG=C.UTF-8 (the default of a
// minimal Debian) `navigator.language` is "C", which is not a BCP 47 tag, and every Intl
// constructor given it throws a RangeError. A library that formats with `navigator.language` at
// import time (uPlot does) would then stop the whole window from starting. This module is
// imported first by main.ts and puts a valid tag in its place.

/** The tag used when the platform's language is not a valid BCP 47 tag. */
export const FALLBACK_LANGUAGE = 'en-US';

/** `language` when Intl accepts it, else the fallback. */
export function usableLanguage(language: string | undefined | null): string {
  if (!language) return FALLBACK_LANGUAGE;
  try {
    return Intl.getCanonicalLocales(language)[0] ?? FALLBACK_LANGUAGE;
  } catch {
    return FALLBACK_LANGUAGE;
  }
}

/** Replaces `navigator.language(s)` by valid tags when the platform's are not; true if it did. */
export function guardNavigatorLanguage(nav: Navigator = navigator): boolean {
  const language = usableLanguage(nav.language);
  if (language === nav.language) return false;
  const languages = (nav.languages ?? []).map(usableLanguage);
  Object.defineProperty(nav, 'language', { get: () => language, configurable: true });
  Object.defineProperty(nav, 'languages', { get: () => (languages.length ? languages : [language]), configurable: true });
  return true;
}

guardNavigatorLanguage();
