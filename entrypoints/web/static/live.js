// gpuops live updates: listens to the server's /events stream and, when the store changes, fetches the current
// page again and swaps in its live regions (elements with data-live and an id). A region holding a form the user
// is filling in is left alone until they submit it.
(function () {
  "use strict";
  var source = document.body.getAttribute("data-live-events");
  if (!source || !window.EventSource) { return; }
  var indicator = document.getElementById("live-status");
  var refreshing = false, again = false;

  function busy(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /^(TEXTAREA|INPUT|SELECT)$/.test(active.tagName)) { return true; }
    var fields = region.querySelectorAll("textarea");
    for (var i = 0; i < fields.length; i++) { if (fields[i].value) { return true; } }
    return false;
  }

  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (region) {
          var replacement = fresh.getElementById(region.id);
          if (replacement && !busy(region)) { region.replaceWith(document.importNode(replacement, true)); }
        });
        document.dispatchEvent(new CustomEvent("gpuops:updated"));
      })
      .catch(function () { /* the next change event tries again */ })
      .then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }

  var events = new EventSource(source);
  events.addEventListener("hello", function () { if (indicator) { indicator.classList.add("on"); } });
  events.addEventListener("change", refresh);
  events.onerror = function () { if (indicator) { indicator.classList.remove("on"); } };
}());
