// What a button that acts in place says when its answer cannot be shown beside it: a 400
// is swapped in where the button was (the error sits beside it), but a refused or failed
// request (429, 403, 5xx, the network) leaves the page as it was and says why here, in
// the polite status region the notification toasts use. A file, not an inline script:
// the Content-Security-Policy runs scripts from Kestrel's origin only.
(function () {
  "use strict";
  var SHOW_MS = 8000;

  function say(text) {
    var box = window.kestrelToastBox();
    var item = document.createElement("p");
    item.className = "toast";
    item.textContent = text;
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, SHOW_MS);
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status === 400) return; // swapped in: the error is beside the button
    if (xhr.status === 429) {
      var wait = parseInt(xhr.getResponseHeader("Retry-After") || "", 10);
      say("Too many actions at once: try again " + (wait > 0 ? "in " + wait + " s." : "in a moment."));
    } else if (xhr.status === 403) {
      say("That was refused: reload the page and try again.");
    } else {
      say("Kestrel could not do that just now: please try again.");
    }
  });
  document.addEventListener("htmx:sendError", function () {
    say("Kestrel cannot be reached: check your connection and try again.");
  });
})();
