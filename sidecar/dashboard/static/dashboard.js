/* Outpost dashboard: charts (uPlot) and live updates (SSE). No inline script: CSP script-src 'self'. */
(function () {
  "use strict";

  var state = { updates: 0, events: 0, lastEventId: null, charts: {} };
  window.outpostDashboard = state;

  function byId(id) { return document.getElementById(id); }

  function readJson(id) {
    var el = byId(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? o : o[k]; }, obj);
  }

  function fmtNum(v) {
    return v == null ? "–" : String(v).replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f");
  }

  function fmtPct(v) { return v == null ? "–" : (v * 100).toFixed(1) + "%"; }

  function setFigures(root, figures) {
    root.querySelectorAll("[data-figure]").forEach(function (el) {
      var key = el.getAttribute("data-figure");
      var v = key === "scanner" ? figures.opens.scanner + figures.clicks.scanner : get(figures, key);
      if (v === undefined) { return; }
      el.textContent = el.getAttribute("data-format") === "pct" ? fmtPct(v) : fmtNum(v);
    });
  }

  // --- charts

  var COLORS = {
    processed: "#5f6b7a", delivered: "#1f8a4c", deferred: "#b7791f", bounced: "#c53030",
    dropped: "#8a94a3", expired: "#7b3fa0",
    opens: "#2357d6", clicks: "#0e9aa7",
    opens_privacy: "#9aa7ba", opens_scanner: "#d08a8a", clicks_privacy: "#b8c2d0", clicks_scanner: "#e0a96d"
  };
  var LABELS = {
    processed: "processed", delivered: "delivered", deferred: "deferred (recipients)",
    bounced: "bounced", dropped: "dropped", expired: "expired",
    opens: "opens: people", clicks: "clicks: people",
    opens_privacy: "opens: privacy prefetch", opens_scanner: "opens: scanner",
    clicks_privacy: "clicks: privacy", clicks_scanner: "clicks: scanner"
  };
  var KINDS = {
    delivery: ["processed", "delivered", "deferred", "bounced", "dropped"],
    engagement: ["opens", "clicks", "opens_privacy", "opens_scanner", "clicks_scanner"],
    campaign: ["opens", "clicks", "opens_privacy", "opens_scanner", "clicks_scanner"]
  };

  function seriesOpts(name) {
    var machine = name.indexOf("_") > 0;
    return {
      label: LABELS[name] || name,
      stroke: COLORS[name] || "#333",
      width: machine ? 1.5 : 2.2,
      dash: machine ? [6, 4] : undefined,
      fill: machine ? undefined : (COLORS[name] || "#333") + "14",
      points: { show: false }
    };
  }

  function drawChart(el, x, columns, time) {
    if (!el || typeof uPlot === "undefined") { return null; }
    var kind = el.getAttribute("data-kind");
    var names = KINDS[kind];
    var data = [x].concat(names.map(function (n) { return columns[n] || x.map(function () { return 0; }); }));
    var opts = {
      width: Math.max(300, el.clientWidth),
      height: 300,
      scales: { x: { time: time } },
      series: [{ label: time ? "time (UTC)" : "hour since send" }].concat(names.map(seriesOpts)),
      axes: [
        { stroke: "#5f6b7a", grid: { stroke: "#eef1f5" } },
        { stroke: "#5f6b7a", grid: { stroke: "#eef1f5" }, size: 60 }
      ],
      legend: { live: true },
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); }
    };
    if (!time) {
      opts.axes[0].values = function (u, vals) { return vals.map(function (v) { return "+" + v + "h"; }); };
    }
    var chart = state.charts[el.id];
    if (chart) {
      chart.setData(data);
      return chart;
    }
    el.textContent = "";
    chart = new uPlot(opts, data, el);
    state.charts[el.id] = chart;
    window.addEventListener("resize", function () {
      chart.setSize({ width: Math.max(300, el.clientWidth), height: 300 });
    });
    return chart;
  }

  function drawOverview(o) {
    drawChart(byId("chart-delivery"), o.series.t, o.series, true);
    drawChart(byId("chart-engagement"), o.series.t, o.series, true);
    setFigures(document, o.totals);
  }

  function drawCampaign(c) {
    if (c.hours && c.hours.hours && c.hours.hours.length) {
      drawChart(byId("chart-campaign"), c.hours.hours, c.hours.series, false);
    } else if (byId("chart-campaign")) {
      byId("chart-campaign").textContent = "No opens or clicks yet.";
    }
    var funnel = byId("funnel");
    if (funnel) {
      var f = {};
      c.funnel.forEach(function (s) { f[s.step] = s.n; });
      funnel.querySelectorAll("[data-figure]").forEach(function (el) {
        var key = el.getAttribute("data-figure");
        var v = key.indexOf("funnel.") === 0 ? f[key.slice(7)] : get(c.stats, key);
        if (v !== undefined) { el.textContent = fmtNum(v); }
      });
    }
  }

  // --- live updates

  function refresher(src, draw) {
    var timer = null;
    var running = false;
    var again = false;
    function run() {
      if (running) { again = true; return; }
      running = true;
      fetch(src, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (body) { draw(body); state.updates += 1; document.body.setAttribute("data-updates", String(state.updates)); })
        .catch(function () { /* the next event tries again */ })
        .then(function () { running = false; if (again) { again = false; run(); } });
    }
    return function () {
      if (timer) { return; }
      timer = setTimeout(function () { timer = null; run(); }, 250);
    };
  }

  function listen(onEvent) {
    if (typeof EventSource === "undefined") { return; }
    var live = byId("live");
    var es = new EventSource("/api/events/stream");
    es.onopen = function () { if (live) { live.classList.add("on"); } };
    es.onerror = function () { if (live) { live.classList.remove("on"); } };
    es.onmessage = function (msg) {
      state.events += 1;
      state.lastEventId = msg.lastEventId;
      onEvent(JSON.parse(msg.data));
    };
  }

  function autoSubmit() {
    var form = byId("range-form");
    if (!form) { return; }
    form.querySelectorAll("select").forEach(function (s) {
      s.addEventListener("change", function () { form.submit(); });
    });
  }

  function start() {
    autoSubmit();
    var handlers = [];
    var overview = readJson("overview-data");
    if (overview) {
      drawOverview(overview);
      var ov = byId("overview");
      handlers.push({ match: function () { return true; }, refresh: refresher(ov.getAttribute("data-src"), drawOverview) });
    }
    var campaign = readJson("campaign-data");
    if (campaign) {
      drawCampaign(campaign);
      var cel = byId("campaign");
      var name = cel.getAttribute("data-campaign");
      if (name) {
        handlers.push({
          match: function (e) { return e.campaign === name; },
          refresh: refresher(cel.getAttribute("data-src"), drawCampaign)
        });
      }
    }
    if (document.body.getAttribute("data-csrf")) {
      listen(function (event) {
        handlers.forEach(function (h) { if (h.match(event)) { h.refresh(); } });
      });
    }
    document.body.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
