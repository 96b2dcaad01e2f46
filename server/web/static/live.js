// Live regions without reloading: every few seconds, ask this same page for its live regions
// (Accept: application/json) and replace those that changed. The page reads fine without it.
(function () {
  "use strict";
  var regions = document.querySelectorAll("[data-live]");
  if (!regions.length || !window.fetch) {
    return;
  }
  var every = Number(document.body.getAttribute("data-live-every-ms")) || 2000;
  var last = {};

  function apply(blocks) {
    regions.forEach(function (region) {
      var html = blocks[region.id];
      if (typeof html === "string" && last[region.id] !== html) {
        last[region.id] = html;
        region.innerHTML = html;
      }
    });
    document.body.setAttribute("data-live-at", new Date().toISOString());
  }

  function refresh() {
    fetch(window.location.href, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual"
    })
      .then(function (answer) {
        return answer.ok ? answer.json() : null;
      })
      .then(function (blocks) {
        if (blocks) {
          apply(blocks);
        }
      })
      .catch(function () {})  // offline for a moment: the next round tries again
      .then(function () {
        window.setTimeout(refresh, every);
      });
  }

  window.setTimeout(refresh, every);
})();
