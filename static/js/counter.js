// Character counters: each ".counter[data-counter-for]" that templates/form_fields.html
// renders beside a field ("12/200", the limit from the form field's max_length) follows
// what is typed.
//
// - Counted as the server counts: characters (an emoji is one, not two UTF-16 units),
//   and a line break as two, since a textarea sends "\r\n".
// - Over the limit the counter turns to the error style. With the counter running, the
//   field's maxlength goes: pasted text is no longer cut off unseen, the counter says
//   how much to trim, and the server refuses what is still too long.
// - The counter is no live region (it would speak at every keystroke). One polite
//   region says it once when a field nears its limit and once when it passes it.
(function () {
  "use strict";

  var NEAR = 0.9; // "n characters left" from 90% of the limit

  var counters = document.querySelectorAll(".counter[data-counter-for]");
  if (!counters.length) return;

  // In the page before anything is said: screen readers read what changes in a live
  // region, not a region that arrives with its text.
  var announcer = document.createElement("div");
  announcer.className = "visually-hidden";
  announcer.setAttribute("role", "status");
  announcer.setAttribute("aria-live", "polite");
  document.body.appendChild(announcer);

  function length(value) {
    return Array.from(value.replace(/\r\n|\r|\n/g, "\r\n")).length;
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function follow(counter) {
    var field = document.getElementById(counter.dataset.counterFor);
    var used = counter.querySelector(".counter-used");
    var max = Number(counter.dataset.max);
    if (!field || !used || !max) return;
    field.removeAttribute("maxlength");
    var state = null;

    function update() {
      var n = length(field.value);
      used.textContent = String(n);
      counter.classList.toggle("over", n > max);
      var now = n > max ? "over" : n >= max * NEAR ? "near" : "ok";
      // Said once on the way up; typing on within the same state says nothing more.
      if (state !== null && now !== state && now !== "ok") {
        var label = field.labels && field.labels.length ? field.labels[0].textContent.trim() : "This field";
        announcer.textContent =
          now === "over"
            ? label + ": " + plural(n - max, "character") + " too many"
            : label + ": " + plural(max - n, "character") + " left";
      }
      state = now;
    }

    field.addEventListener("input", update);
    update();
  }

  Array.prototype.forEach.call(counters, follow);
})();
