// /ops: the value and time of the sample under the pointer, the finger or the keyboard
// focus, read from the data- attributes ops.charts writes on each chart's <svg>; and
// the "Auto-refresh every 30 s" toggle, which redraws the figures and charts in place.
// Without this script the page keeps its captions, axes and <title> tooltips.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const STORE = "kestrel.ops.autoRefresh";
  const PERIOD_MS = 30000;
  const SWAPPED = ["generated-at", "roles", "chart-groups"]; // the parts a refresh replaces
  const STEPS = {ArrowLeft: -1, ArrowRight: 1}; // one drawn sample
  const HOURS = {PageUp: -3600, PageDown: 3600}; // the sample nearest an hour before or after

  function clock(seconds, withSeconds) {
    return new Date(seconds * 1000).toISOString().slice(11, withSeconds ? 19 : 16) + " UTC";
  }

  // As ops.charts.ago writes the time axis.
  function ago(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds < 60) return Math.round(seconds) + " s ago";
    if (seconds < 120 * 60) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  function svgElement(name, className) {
    const element = document.createElementNS(SVG, name);
    element.setAttribute("class", className);
    element.setAttribute("visibility", "hidden");
    return element;
  }

  function enhance(svg) {
    if (!svg.dataset.times) return; // an empty chart has no samples to read
    const times = svg.dataset.times.split(" ").map(Number);
    const values = svg.dataset.values.split("|");
    // The drawn points, in sample order: each line's points, and the lone samples' dots.
    const xy = [];
    svg.querySelectorAll(".chart-series polyline, .chart-series circle").forEach(function (shape) {
      if (shape.tagName === "circle") {
        xy.push([shape.cx.baseVal.value, shape.cy.baseVal.value]);
        return;
      }
      for (let i = 0; i < shape.points.numberOfItems; i++) {
        const point = shape.points.getItem(i);
        xy.push([point.x, point.y]);
      }
    });
    if (!xy.length || xy.length !== times.length || xy.length !== values.length) return;
    const start = Number(svg.dataset.start), now = Number(svg.dataset.now);
    const figure = svg.closest("figure");
    const top = svg.querySelector(".chart-grid").getAttribute("y1");
    const bottom = svg.querySelector(".chart-baseline").getAttribute("y1");

    // The readout below replaces the <title> tooltip, which would show on top of it.
    const title = svg.querySelector("title");
    if (title) title.remove();
    const cursor = svgElement("line", "chart-cursor");
    cursor.setAttribute("y1", top);
    cursor.setAttribute("y2", bottom);
    const dot = svgElement("circle", "chart-dot");
    dot.setAttribute("r", "3.5");
    svg.append(cursor, dot);
    const tip = document.createElement("div");
    tip.className = "chart-tip";
    tip.setAttribute("role", "status"); // read out as the arrow keys move along the samples
    tip.hidden = true;
    figure.append(tip);
    svg.setAttribute("tabindex", "0");
    let current = xy.length - 1;

    function show(index) {
      current = Math.max(0, Math.min(xy.length - 1, index));
      const [x, y] = xy[current];
      const when = start + times[current];
      cursor.setAttribute("x1", x);
      cursor.setAttribute("x2", x);
      dot.setAttribute("cx", x);
      dot.setAttribute("cy", y);
      cursor.setAttribute("visibility", "visible");
      dot.setAttribute("visibility", "visible");
      const value = document.createElement("strong");
      value.textContent = values[current];
      tip.replaceChildren(value, " at " + clock(when) + ", " + ago(now - when));
      tip.hidden = false;
      // Over the sample, or under it near the top; always inside the card.
      const box = svg.getBoundingClientRect(), card = figure.getBoundingClientRect();
      const scale = box.width / svg.viewBox.baseVal.width;
      const left = box.left - card.left + x * scale - tip.offsetWidth / 2;
      let above = box.top - card.top + y * scale - tip.offsetHeight - 8;
      if (above < box.top - card.top) above += tip.offsetHeight + 16;
      tip.style.left = Math.max(0, Math.min(card.width - tip.offsetWidth, left)) + "px";
      tip.style.top = above + "px";
    }

    function hide() {
      cursor.setAttribute("visibility", "hidden");
      dot.setAttribute("visibility", "hidden");
      tip.hidden = true;
    }

    // The index of the entry of `sorted` (ascending) nearest to `target`.
    function nearest(sorted, target) {
      let low = 0, high = sorted.length - 1;
      while (low < high) {
        const middle = (low + high) >> 1;
        if (sorted[middle] < target) low = middle + 1;
        else high = middle;
      }
      return low > 0 && target - sorted[low - 1] < sorted[low] - target ? low - 1 : low;
    }
    const xs = xy.map(function (point) { return point[0]; });

    // The sample drawn nearest to the pointer's x (the points are in time order).
    function atPointer(event) {
      const matrix = svg.getScreenCTM();
      show(nearest(xs, matrix ? (event.clientX - matrix.e) / matrix.a : 0));
    }

    svg.addEventListener("pointermove", atPointer);
    svg.addEventListener("pointerdown", atPointer);
    // A click or tap also focuses the chart: its readout then stays until focus moves on.
    svg.addEventListener("pointerleave", function () {
      if (document.activeElement !== svg) hide();
    });
    svg.addEventListener("focus", function () { show(current); });
    svg.addEventListener("blur", function () {
      hide();
      current = xy.length - 1; // the next Tab here starts at the latest sample
    });
    svg.addEventListener("keydown", function (event) {
      let index;
      if (event.key === "Home") index = 0;
      else if (event.key === "End") index = xy.length - 1;
      else if (event.key in STEPS) index = current + STEPS[event.key];
      else if (event.key in HOURS) index = nearest(times, times[current] + HOURS[event.key]);
      else if (event.key === "Escape") { hide(); return; }
      else return;
      event.preventDefault();
      show(index);
    });
  }

  function enhanceAll(root) {
    root.querySelectorAll("svg.chart").forEach(enhance);
  }

  const tools = document.querySelector(".chart-tools");
  const toggle = document.getElementById("auto-refresh");
  const status = document.getElementById("refresh-status");
  let timer = null;

  async function refresh() {
    if (document.hidden) return; // a tab in the background waits for the next turn
    try {
      const response = await fetch(location.pathname, {credentials: "same-origin", cache: "no-store"});
      if (!response.ok) throw new Error("HTTP " + response.status);
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const parts = SWAPPED.map(function (id) { return page.getElementById(id); });
      if (parts.includes(null)) throw new Error("the page came back without its charts; log in again?");
      const focused = document.activeElement && document.activeElement.dataset
        ? document.activeElement.dataset.field : undefined;
      SWAPPED.forEach(function (id, i) { document.getElementById(id).replaceWith(parts[i]); });
      enhanceAll(document.getElementById("chart-groups"));
      // Keyboard focus stays on the chart it was on.
      const again = focused && document.querySelector('svg.chart[data-field="' + focused + '"]');
      if (again) again.focus();
      status.textContent = "Updated at " + clock(Date.now() / 1000, true) + ".";
    } catch (error) {
      status.textContent = "Not refreshed: " + error.message;
    }
  }

  function schedule() {
    clearInterval(timer);
    timer = toggle.checked ? setInterval(refresh, PERIOD_MS) : null;
  }

  enhanceAll(document);
  if (tools && toggle && status) {
    try {
      toggle.checked = localStorage.getItem(STORE) === "on";
    } catch (error) {
      // Storage refused (a privacy setting): the toggle still works, it is just not remembered.
    }
    toggle.addEventListener("change", function () {
      try {
        localStorage.setItem(STORE, toggle.checked ? "on" : "off");
      } catch (error) {
        // As above.
      }
      status.textContent = "";
      schedule();
    });
    tools.hidden = false;
    schedule();
  }
})();
