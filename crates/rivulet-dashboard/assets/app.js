// rivulet dashboard: live refresh of the visible page's data, select-all, confirmations.
(function () {
  "use strict";
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var message = form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { ev.preventDefault(); }
  });
  document.addEventListener("change", function (ev) {
    var box = ev.target;
    if (!box.classList || !box.classList.contains("select-all")) { return; }
    var form = box.closest("form");
    form.querySelectorAll("input.select").forEach(function (b) { b.checked = box.checked; });
  });
  var live = document.getElementById("live");
  if (!live) { return; }
  var src = live.getAttribute("data-live");
  var every = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 5000;
  var busy = false;
  setInterval(function () {
    if (busy || document.visibilityState !== "visible") { return; }
    busy = true;
    fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { live.innerHTML = html; } })
      .catch(function () {})
      .then(function () { busy = false; });
  }, every);
})();
