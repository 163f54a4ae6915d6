/** Moves the focus to the first field under `root` marked `aria-invalid`, where assistive
 *  technology reads its problem with it (`aria-describedby`). A form refused on submit calls it
 *  once its problems are shown; returns whether a field took the focus. */
export function focusFirstInvalid(root: ParentNode | undefined): boolean {
  const field = root?.querySelector<HTMLElement>('[aria-invalid="true"]');
  field?.focus();
  return field != null;
}
