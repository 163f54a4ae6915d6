// The window's state badges draw the tray's own icons: each state maps to one of the tray's
// states (`TrayIcon`, generated from the Rust enum), the badge shows that state's file from
// icons/ (tray-<state>.png, imported by Vite, the very bytes src-tauri/src/tray.rs shows in the
// tray), takes its colour from it, and names the state in words, so colour is never the only cue.
import type { TrayIcon } from './types';
import active from '../../../icons/tray-active.png';
import error from '../../../icons/tray-error.png';
import expired from '../../../icons/tray-expired.png';
import expiring from '../../../icons/tray-expiring.png';
import loggedOut from '../../../icons/tray-logged-out.png';

/** A badge's colour, the tray icon's: green, amber, red, or grey. */
export type Tone = 'ok' | 'warn' | 'bad' | 'idle';

/** A state as the window shows it: its words, the tray icon it shares, and that icon's colour. */
export interface Badge {
  label: string;
  icon: TrayIcon;
  tone: Tone;
}

/** Every tray icon's image, as the window loads it (a data: URL or a file of the build). */
export const TRAY_ICON_URL: Readonly<Record<TrayIcon, string>> = {
  logged_out: loggedOut,
  active,
  expiring,
  expired,
  error,
};

/** The colour of each tray icon: the padlock's own. */
export const TRAY_ICON_TONE: Readonly<Record<TrayIcon, Tone>> = {
  logged_out: 'idle',
  active: 'ok',
  expiring: 'warn',
  expired: 'bad',
  error: 'bad',
};

/** The badge that reads `label` with the tray's `icon` (and its colour). */
export function badge(label: string, icon: TrayIcon): Badge {
  return { label, icon, tone: TRAY_ICON_TONE[icon] };
}
