"use strict";
(function () {
  if (!window.EventSource || !window.fetch) return;
  var words = { healthy: "Healthy", degraded: "Degraded", unhealthy: "Unhealthy" };
  var rows = {}, view = "all";
  function index() {
    rows = {};
    var section = document.getElementById("components");
    view = (section && section.getAttribute("data-view")) || "all";
    document.querySelectorAll("[data-component]").forEach(function (r) { rows[r.getAttribute("data-component")] = r; });
  }
  function ago(secs) {
    secs = Math.max(0, secs);
    if (secs < 1) return "just now";
    if (secs < 90) return Math.round(secs) + " s";
    if (secs < 3600) return Math.round(secs / 60) + " min";
    if (secs < 86400) { var h = Math.floor(secs / 3600); return h + " h " + Math.round((secs - h * 3600) / 60) + " min"; }
    var d = Math.floor(secs / 86400); return d + " d " + Math.round((secs - d * 86400) / 3600) + " h";
  }
  function agoWords(secs) {
    return secs < 1 ? "just now" : ago(secs) + " ago";
  }
  function tick() {
    document.querySelectorAll("time[data-ago]").forEach(function (t) {
      var at = Date.parse(t.getAttribute("datetime"));
      if (!isNaN(at)) t.textContent = agoWords((Date.now() - at) / 1000);
    });
  }
  function stamp(el, iso) {
    el.textContent = "";
    if (!iso) { el.textContent = "waiting for the first check"; return; }
    var t = document.createElement("time");
    t.setAttribute("datetime", iso); t.setAttribute("title", iso); t.setAttribute("data-ago", "");
    el.append("since ", t);
    t.textContent = agoWords((Date.now() - Date.parse(iso)) / 1000);
  }
  function fmtMs(v) {
    if (typeof v !== "number") return "–";
    if (v < 1) return v.toFixed(2) + " ms";
    if (v < 100) return v.toFixed(1) + " ms";
    if (v < 1000) return v.toFixed(0) + " ms";
    return (v / 1000).toFixed(2) + " s";
  }
  function setClass(el, status) {
    el.className = el.className.replace(/\bs-\w+/g, "").trim() + " s-" + (status || "pending");
  }
  // The server-rendered page is fetched again after events: soon after a
  // change of state, at most every 10 s for routine checks.
  var pending = null, due = 0, last = 0;
  function refreshSoon(urgent) {
    var at = Math.max(Date.now() + 800, last + (urgent ? 3000 : 10000));
    if (pending && due <= at) return;
    if (pending) clearTimeout(pending);
    due = at;
    pending = setTimeout(refresh, at - Date.now());
  }
  function urgently() { refreshSoon(true); }
  function refresh() {
    last = Date.now();
    fetch(location.href, { cache: "no-store" }).then(function (r) { return r.text(); }).then(function (html) {
      pending = null;
      var doc = new DOMParser().parseFromString(html, "text/html");
      var open = {};
      document.querySelectorAll("[data-component] details[open]").forEach(function (d) {
        open[d.closest("[data-component]").getAttribute("data-component")] = true;
      });
      ["alerting", "components", "performance", "about"].forEach(function (id) {
        var now = document.getElementById(id), next = doc.getElementById(id);
        if (now && next) now.replaceWith(document.importNode(next, true));
      });
      var v = doc.getElementById("verdict"), s = doc.querySelector("header.top .sub");
      var cur = document.querySelector("header.top .sub");
      if (v) document.getElementById("verdict").replaceWith(document.importNode(v, true));
      if (s && cur) { cur.replaceWith(document.importNode(s, true)); live(state); }
      document.title = doc.title;
      index();
      Object.keys(open).forEach(function (n) { var r = rows[n]; if (r) { var d = r.querySelector("details"); if (d) d.open = true; } });
    }).catch(function () { pending = null; });
  }
  var state = "connecting";
  function live(s) {
    state = s;
    var el = document.getElementById("live");
    if (el) el.textContent = s === "open" ? "live" : s === "connecting" ? "connecting…" : "reconnecting…";
  }
  // A component named only (a chip: the page past 50 components): its
  // colour follows; a change of state fetches the page, which shows it in
  // full if it is not healthy. Its routine checks change nothing shown.
  function chip(r, d) {
    if (r.classList.contains("s-" + (d.status || "pending"))) return;
    setClass(r, d.status);
    refreshSoon(true);
  }
  function apply(d, urgent) {
    var r = rows[d.component];
    if (!r) { if (view !== "one") refreshSoon(true); return; }
    if (r.hasAttribute("data-chip")) { chip(r, d); return; }
    setClass(r, d.status);
    r.querySelector(".state .badge").textContent = words[d.status] || "Not checked yet";
    stamp(r.querySelector(".since"), d.since);
    r.querySelector(".rt").textContent = d.checked_at ? fmtMs(d.response_time_ms) : "–";
    // The same error stays as the server wrote it (with its reason in words).
    var why = r.querySelector(".why");
    if ((d.error || "") !== (why.getAttribute("data-error") || "")) {
      why.textContent = d.error || "";
      why.setAttribute("data-error", d.error || "");
    }
    why.hidden = !d.error;
    refreshSoon(urgent);
  }
  function verdict(v) {
    var el = document.getElementById("verdict");
    setClass(el, v.status);
    el.textContent = words[v.status] || v.status;
    document.title = "depwatch: " + v.status;
    var since = document.getElementById("verdict-since");
    if (since) stamp(since, v.since);
    // A component added or removed by a reload (a page of one shows one).
    var names = Object.keys(rows);
    if (view !== "one" && (v.components.length !== names.length || v.components.some(function (n) { return !rows[n]; }))) refreshSoon(true);
  }
  index();
  var es = new EventSource("api/events");
  es.onopen = function () { live("open"); };
  es.onerror = function () { live("reconnecting"); };
  function on(name, f) { es.addEventListener(name, function (e) { try { f(JSON.parse(e.data)); } catch (err) { /* a bad event changes nothing */ } }); }
  on("state", function (d) { apply(d, true); });
  on("check", function (d) { apply(d, false); });
  on("verdict", verdict);
  on("pipeline", urgently);
  on("incident", urgently);
  setInterval(tick, 15000);
})();
