// Live notifications: an EventSource on /api/notifications/stream shows each new
// notification as a toast and counts it on the badge, without a reload.
//
// - On load, GET /api/notifications?count=1 gives the unread count and the newest id;
//   the stream starts after that id (?lastEventId=), so nothing falls in between.
// - The browser reconnects by itself after a dropped or ended stream (the server says
//   `retry:` and the browser sends Last-Event-ID: missed notifications are replayed).
// - An HTTP error (401, 403, 429 when this person has too many streams open, 503 when
//   the server is full) makes the browser give up: we fall back to polling
//   GET /api/notifications every POLL_MS at once, and try the stream again after
//   REFUSED_MS, doubling with each refusal in a row up to STREAM_AGAIN_MS. Retrying
//   sooner would only be refused again (and the polls stop everything on a 401).
// - A stream that keeps dropping (MAX_FAILURES times in a row) falls back to polling too.
// - A hidden tab closes its stream (one thread less on the server, one connection less
//   against the browser's per-site limit) and catches up when shown again.
(function () {
  "use strict";

  var LIST_URL = "/api/notifications";
  var STREAM_URL = "/api/notifications/stream";
  var POLL_MS = 15000;
  var MAX_FAILURES = 3;
  var STREAM_AGAIN_MS = 5 * 60 * 1000; // while polling, try the stream again this often
  var REFUSED_MS = 30000; // first retry of a refused stream (the server's Retry-After: 30 or 60 s)
  var HEALTHY_MS = 10000; // a stream that lived this long ended normally, not by failing
  var MAX_TOASTS = 3; // at most this many toasts on screen
  var TOAST_MS = 6000;

  var badge = document.getElementById("notification-badge");
  // The number alone is what shows; the badge's hidden " unread" words it for screen readers.
  var badgeCount = badge && badge.querySelector(".count");
  var list = document.getElementById("notification-list"); // only on the notifications page
  var lastId = null;
  var unread = 0;
  var source = null;
  var openedAt = 0;
  var failures = 0;
  var pollTimer = null;
  var retryTimer = null;
  var refusals = 0;
  var stopped = false;

  function parseId(id) {
    var parts = String(id).split("-");
    return [Number(parts[0]), Number(parts[1])];
  }

  function newer(a, b) {
    if (b === null) return true;
    var x = parseId(a), y = parseId(b);
    return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
  }

  function setUnread(count) {
    unread = Math.max(0, count);
    if (!badge) return;
    badgeCount.textContent = unread >= 100 ? "99+" : String(unread);
    badge.hidden = unread === 0;
  }

  function toast(notification) {
    var item = document.createElement("a");
    item.className = "toast";
    item.href = notificationLink(notification) || "/notifications"; // what it is about
    item.textContent = notification.message; // text, never HTML
    var box = window.kestrelToastBox();
    while (box.children.length >= MAX_TOASTS) box.firstChild.remove(); // a catch-up shows the newest few
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, TOAST_MS);
  }

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  // The page a notification is about, as feeds.notification_views.notification_link says.
  function notificationLink(notification) {
    var data = notification.data || {};
    if (notification.kind === "report") return "/reports";
    if ((notification.kind === "like" || notification.kind === "post") && Number.isInteger(data.postId)) return "/posts/" + data.postId;
    if (notification.kind === "follow" && Number.isInteger(data.userId)) return "/users/" + data.userId;
    return null;
  }

  function fullDate(d) {
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    var month = d.toLocaleString("en-GB", {month: "short"});
    return d.getDate() + " " + month + " " + d.getFullYear() + ", " + two(d.getHours()) + ":" + two(d.getMinutes());
  }

  function showOnPage(notification) {
    var empty = list.querySelector(".empty");
    if (empty) empty.remove();
    var item = document.createElement("li");
    item.className = "card compact notification unread";
    item.dataset.id = notification.id;
    var link = notificationLink(notification);
    var message = document.createElement(link ? "a" : "span");
    message.className = "notification-text";
    if (link) message.href = link;
    message.textContent = notification.message;
    var when = document.createElement("time");
    when.className = "meta";
    when.dateTime = notification.at;
    when.textContent = "just now";
    when.title = fullDate(new Date(notification.at)); // as the server's time_ago: the full date on hover
    item.append(message, " ", when);
    list.prepend(item);
    // Seen on this page: mark it read, as loading the page would have.
    fetch(LIST_URL + "/read", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken()},
      body: JSON.stringify({upTo: notification.id}),
    }).catch(function () {});
  }

  // Every notification, live or replayed or polled, comes through here, oldest first.
  function receive(notification, showToast) {
    if (!newer(notification.id, lastId)) return; // seen already
    lastId = notification.id;
    if (list) {
      showOnPage(notification);
    } else {
      setUnread(unread + 1);
    }
    if (showToast) toast(notification);
  }

  function stopAll() {
    stopped = true;
    closeStream();
    stopPolling();
  }

  // Fetch the newest notifications; with `deliver`, hand the new ones to receive().
  function fetchLatest(count, deliver) {
    return fetch(LIST_URL + "?count=" + count, {credentials: "same-origin"})
      .then(function (response) {
        if (response.status === 401) { stopAll(); return null; } // logged out elsewhere
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        if (!body) return;
        var fresh = body.notifications.filter(function (n) { return newer(n.id, lastId); }).reverse();
        if (deliver) {
          fresh.forEach(function (n) { receive(n, true); });
        } else if (fresh.length) {
          lastId = fresh[fresh.length - 1].id;
        }
        if (!list) setUnread(body.unread);
      })
      .catch(function () {});
  }

  function openStream() {
    if (stopped || source || document.hidden) return;
    clearTimeout(retryTimer);
    var url = STREAM_URL + (lastId ? "?lastEventId=" + encodeURIComponent(lastId) : "");
    source = new EventSource(url);
    openedAt = Date.now();
    source.onopen = function () { refusals = 0; stopPolling(); };
    source.addEventListener("notification", function (event) {
      failures = 0;
      refusals = 0;
      try { receive(JSON.parse(event.data), true); } catch (e) { /* a bad message: skip it */ }
    });
    source.onerror = function () {
      if (Date.now() - openedAt > HEALTHY_MS) failures = 0; // an ended stream, reconnecting
      else failures += 1;
      openedAt = Date.now();
      if (source.readyState === EventSource.CLOSED) {
        // An HTTP error: the server refused the stream. Poll now, and ask again later.
        closeStream();
        refusals += 1;
        var delay = Math.min(REFUSED_MS * Math.pow(2, refusals - 1), STREAM_AGAIN_MS);
        fetchLatest(20, true);
        startPolling();
        retryTimer = setTimeout(function () { failures = 0; openStream(); }, delay * (0.75 + Math.random() / 2));
      } else if (failures >= MAX_FAILURES) {
        closeStream();
        startPolling();
      }
    };
  }

  function closeStream() {
    if (source) { source.close(); source = null; }
  }

  function startPolling() {
    if (pollTimer || stopped) return;
    var started = Date.now();
    pollTimer = setInterval(function () {
      fetchLatest(20, true);
      if (Date.now() - started > STREAM_AGAIN_MS) { failures = 0; openStream(); }
    }, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  document.addEventListener("visibilitychange", function () {
    if (stopped) return;
    if (document.hidden) {
      closeStream();
    } else if (!pollTimer) {
      openStream(); // replays what arrived while hidden, from lastId
    }
  });

  fetchLatest(1, false).then(openStream);
})();
