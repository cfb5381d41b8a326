// Poll each unfinished report job (GET /api/jobs/{id}) until it ends. A file, not an inline
// <script>: the Content-Security-Policy runs scripts from Kestrel's origin only.
(function () {
  const done = new Set(["finished", "failed", "expired", "canceled", "stopped"]);
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
      if (status.textContent !== body.status) status.textContent = body.status; // announced on change only
      const bar = card.querySelector("progress");
      if (body.progress && body.progress.total) bar.value = body.progress.done / body.progress.total;
      if (body.status === "failed") card.querySelector(".detail").textContent = body.error || "failed";
      if (body.status === "finished") {
        bar.value = 1;
        const s = body.result && body.result.summary;
        if (s) card.querySelector(".detail").textContent = s.posts + " posts, " + s.views + " views, " + s.likes + " likes";
        card.querySelector(".download").hidden = false;
      }
      if (done.has(body.status)) clearInterval(timer);
    }, 1000);
  });
})();
