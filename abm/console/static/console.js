// Progressive enhancement only: every page works without it.
// Filter forms submit as soon as a select changes; buttons marked data-confirm ask first.
document.addEventListener("change", (event) => {
  const field = event.target;
  if (field.matches("form.filters select")) field.form.requestSubmit();
});
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const message = (button && button.dataset.confirm) || event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
