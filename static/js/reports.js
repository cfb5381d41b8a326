// Poll each unfinished report job (GET /api/jobs/{id}) until it ends. A file, not an inline
// <script>: the Content-Security-Policy runs scripts from Kestrel's origin only.
(function () {
  const done = new Set(["finished", "failed", "expired", "canceled", "stopped"]);
  // The chip's words and colour, as jobs.views.job_chip says them.
  const chips = {
    pending: ["Queued", "skipped"], queued: ["Queued", "skipped"],
    deferred: ["Queued", "skipped"], scheduled: ["Queued", "skipped"],
    started: ["Building", "warning"], finished: ["Ready", "ok"], failed: ["Failed", "error"],
  };
  function chip(body) {
    const [label, level] = chips[body.status] || ["Expired", "skipped"];
    const p = body.progress;
    if (body.status === "started" && p && p.total) return [label + " " + Math.round(100 * p.done / p.total) + " %", level];
    return [label, level];
  }
  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }
  document.querySelectorAll(".job").forEach(function (card) {
    if (done.has(card.dataset.status)) return;
    const id = card.dataset.job;
    const timer = setInterval(async function () {
      let body;
      try {
        const response = await fetch("/api/jobs/" + id, {credentials: "same-origin"});
        if (!response.ok) return;
        body = await response.json();
      } catch (e) { return; }
      const status = card.querySelector(".status");
      const [label, level] = chip(body);
      if (status.textContent !== label) status.textContent = label; // announced on change only
      status.className = "status level " + level;
      const bar = card.querySelector("progress");
      if (body.progress && body.progress.total) bar.value = 100 * body.progress.done / body.progress.total;
      if (body.status === "failed") {
        card.querySelector(".detail").textContent = body.error || "The report could not be built.";
        card.querySelector(".retry").hidden = false;
      }
      if (body.status === "finished") {
        bar.value = 100;
        const s = body.result && body.result.summary;
        if (s) card.querySelector(".detail").textContent = plural(s.posts, "post") + ", " + plural(s.views, "view") + ", " + plural(s.likes, "like");
        card.querySelector(".download").hidden = false;
      }
      if (done.has(body.status)) clearInterval(timer);
    }, 1000);
  });
})();
