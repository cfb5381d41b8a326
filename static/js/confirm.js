// A form with data-confirm="question" asks before it is sent (the delete buttons).
// A file, not an onsubmit="" attribute: the Content-Security-Policy runs no inline script.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
