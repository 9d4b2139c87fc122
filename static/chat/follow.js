// Keeps a reader who follows the conversation at its end, and tells one who scrolled up
// that new text arrived: "Jump to latest" appears above the composer and takes them there.

/**
 * @param {import("./messages.js").MessageList} view
 * @param {HTMLElement} dock  the composer's sticky dock, which grows with notices and long messages
 * @param {HTMLButtonElement} jump  the "Jump to latest" button
 * @param {HTMLElement} composer  focused after jumping, to write on
 */
export function keepFollowing(view, dock, jump, composer) {
  let following = true; // the reader was at the bottom before the last change of layout

  view.onUnseen = () => {
    jump.hidden = false;
  };
  jump.addEventListener("click", () => {
    jump.hidden = true;
    view.scrollToEnd();
    composer.focus({ preventScroll: true });
  });
  window.addEventListener(
    "scroll",
    () => {
      following = view.pinned();
      if (following) jump.hidden = true;
    },
    { passive: true },
  );
  // The dock grows with a notice, a counter or a longer message: keep the newest line above it.
  new ResizeObserver(() => following && view.scrollToEnd()).observe(dock);
}
