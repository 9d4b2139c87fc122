// The tokens page: copy a new token's secret, which is shown only this once.

const COPIED_MS = 1_500;
const button = document.querySelector("[data-copy-secret]");

button.addEventListener("click", async () => {
  await navigator.clipboard.writeText(document.querySelector("[data-token-secret]").textContent);
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = "Copy"), COPIED_MS);
});
