// a11y.mjs: keyboard access for the page's file pickers. The "load weights…", "add photos…" and
// "add a folder…" buttons are labels around hidden file inputs, which Tab skips: each label becomes a
// focusable button (tabindex 0, role button) that opens its input on Enter or Space, and says when
// it is unavailable (aria-disabled follows the input's disabled state).
export function initKeyboard() {
  for (const label of document.querySelectorAll('label.file-button')) {
    const input = label.querySelector('input[type="file"]');
    if (!input) continue;
    label.tabIndex = 0;
    label.setAttribute('role', 'button');
    label.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' && ev.key !== ' ') return;
      ev.preventDefault();
      if (!input.disabled) input.click();
    });
    const sync = () => label.setAttribute('aria-disabled', String(input.disabled));
    new MutationObserver(sync).observe(input, { attributes: true, attributeFilter: ['disabled'] });
    sync();
  }
}
