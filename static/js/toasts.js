// The polite status region toasts go to (live notifications, js/notifications.js; what an
// in-place button could not do, js/inplace.js): the page's #toasts, made on first use on
// a page without one. Screen readers announce what is added to a live region that is
// already in the page, so base.html renders it for logged-in people from the start.
(function () {
  "use strict";
  window.kestrelToastBox = function () {
    var box = document.getElementById("toasts");
    if (!box) {
      box = document.createElement("div");
      box.id = "toasts";
      box.className = "toasts";
      box.setAttribute("role", "status");
      box.setAttribute("aria-live", "polite");
      document.body.appendChild(box);
    }
    return box;
  };
})();
