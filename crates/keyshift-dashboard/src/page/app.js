// keyshift dashboard page: renders the server's state (inlined at load, then one `update`
// server-sent event per round) into tables and hand-written SVG charts. No libraries: the
// charts are a bar chart and a line chart, a few dozen lines each.
"use strict";
(function () {
  var init = JSON.parse(document.getElementById("initial").textContent);
  var snap = init.snapshot;
  var history = init.history || [];
  var events = init.events || [];
  var interval = init.interval || 1;
  var historySecs = init.history_secs || 900;
  var NS = "http://www.w3.org/2000/svg";

  function $(id) { return document.getElementById(id); }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function num(x, digits) {
    if (x === undefined || x === null || !isFinite(x)) return "–";
    var a = Math.abs(x);
    if (a >= 1e9) return (x / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (x / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (x / 1e3).toFixed(1) + "k";
    return x.toFixed(digits === undefined ? (a < 10 && a !== Math.floor(a) ? 1 : 0) : digits);
  }
  function secs(x) {
    if (x === undefined || x === null) return "–";
    if (x < 1) return (x * 1000).toFixed(0) + " ms";
    if (x < 120) return x.toFixed(1) + " s";
    if (x < 7200) return (x / 60).toFixed(1) + " min";
    return (x / 3600).toFixed(1) + " h";
  }
  function clock(t) {
    var d = new Date(t * 1000);
    return d.toTimeString().slice(0, 8);
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function legend(items) {
    return '<div class="legend">' + items.map(function (i) {
      return '<span><i class="' + (i.dash ? "dash" : "") + '" style="' +
        (i.dash ? "color:" : "background:") + i.color + '"></i>' + esc(i.label) + "</span>";
    }).join("") + "</div>";
  }
  function table(id, head, rows, empty) {
    var t = $(id);
    if (!rows.length) {
      t.innerHTML = '<tr><td class="empty l">' + esc(empty) + "</td></tr>";
      return;
    }
    t.innerHTML = "<thead><tr>" + head.map(function (h) {
      return "<th" + (h.cls ? ' class="' + h.cls + '"' : "") + ">" + esc(h.label || h) + "</th>";
    }).join("") + "</tr></thead><tbody>" + rows.join("") + "</tbody>";
  }

  // A bar per partition, the bound (dashed) and the mean (dotted).
  function barChart(box, parts, bound) {
    var W = Math.max(300, box.clientWidth || 1000), H = 190, L = 40, B = 22, T = 8;
    var max = niceMax(Math.max(bound.bound || 0, bound.hottest_partition || 0));
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "records per second per partition" });
    var y = function (v) { return T + (H - T - B) * (1 - v / max); };
    for (var i = 0; i <= 4; i++) {
      var v = (max * i) / 4;
      svg.appendChild(el("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "#eef0f3" }));
      svg.appendChild(el("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, num(v)));
    }
    var n = Math.max(parts.length, 1), bw = (W - L) / n;
    var step = Math.ceil(n / Math.max(W / 40, 1));
    parts.forEach(function (p, i) {
      var r = p.rate || 0;
      var over = bound.bound > 0 && r > bound.bound * 1.05;
      var rect = el("rect", { x: L + i * bw + bw * 0.12, y: y(r), width: Math.max(bw * 0.76, 1),
        height: Math.max(H - B - y(r), 0), fill: over ? "var(--over)" : "var(--bar)" });
      rect.appendChild(el("title", {}, "partition " + p.p + ": " + num(r, 1) + " rec/s"));
      svg.appendChild(rect);
      if (i % step === 0)
        svg.appendChild(el("text", { x: L + i * bw + bw / 2, y: H - 6, "text-anchor": "middle" }, String(p.p)));
    });
    svg.appendChild(el("line", { x1: L, x2: W, y1: y(bound.bound), y2: y(bound.bound),
      stroke: "var(--fg)", "stroke-dasharray": "6 4", "stroke-width": 1.5 }));
    svg.appendChild(el("line", { x1: L, x2: W, y1: y(bound.mean), y2: y(bound.mean),
      stroke: "var(--muted)", "stroke-dasharray": "2 3" }));
    box.innerHTML = legend([
      { label: "rate, records/s (red: > bound)", color: "var(--bar)" },
      { label: "bound max(mean, hottest key) = " + num(bound.bound, 1), color: "var(--fg)", dash: true },
      { label: "mean = " + num(bound.mean, 1), color: "var(--muted)", dash: true }
    ]);
    box.appendChild(svg);
  }

  // Lines over time; series on the left axis unless `right`.
  function lineChart(box, points, series, units) {
    var W = Math.max(300, box.clientWidth || 1000), H = 170, L = 40, R = 40, B = 20, T = 8;
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": units.join(", ") });
    var t1 = points.length ? points[points.length - 1].t : Date.now() / 1000;
    var t0 = points.length ? Math.min(points[0].t, t1 - 60) : t1 - 60;
    var x = function (t) { return L + (W - L - R) * (t - t0) / Math.max(t1 - t0, 1); };
    var maxes = [0, 0];
    series.forEach(function (s) {
      points.forEach(function (p) {
        var v = p[s.key];
        if (v !== undefined && v !== null && isFinite(v)) maxes[s.right ? 1 : 0] = Math.max(maxes[s.right ? 1 : 0], v);
      });
    });
    maxes = maxes.map(niceMax);
    var y = function (v, right) { return T + (H - T - B) * (1 - v / maxes[right ? 1 : 0]); };
    for (var i = 0; i <= 4; i++) {
      var f = i / 4;
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(maxes[0] * f), y2: y(maxes[0] * f), stroke: "#eef0f3" }));
      svg.appendChild(el("text", { x: L - 4, y: y(maxes[0] * f) + 4, "text-anchor": "end" }, num(maxes[0] * f)));
      if (series.some(function (s) { return s.right; }))
        svg.appendChild(el("text", { x: W - R + 4, y: y(maxes[1] * f, true) + 4 }, num(maxes[1] * f)));
    }
    for (var k = 0; k <= 4; k++) {
      var tt = t0 + (t1 - t0) * k / 4;
      svg.appendChild(el("text", { x: x(tt), y: H - 4, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" }, clock(tt)));
    }
    series.forEach(function (s) {
      var d = "";
      points.forEach(function (p) {
        var v = p[s.key];
        if (v === undefined || v === null || !isFinite(v)) return;
        d += (d ? "L" : "M") + x(p.t).toFixed(1) + " " + y(v, s.right).toFixed(1);
      });
      if (d) svg.appendChild(el("path", { d: d, fill: "none", stroke: s.color, "stroke-width": 1.8,
        "stroke-dasharray": s.dash ? "6 4" : "none" }));
    });
    box.innerHTML = legend(series.map(function (s) {
      return { label: s.label + (s.right ? " (right)" : ""), color: s.color, dash: s.dash };
    }));
    box.appendChild(svg);
    return { svg: svg, x: x, t0: t0, t1: t1, H: H, B: B, T: T };
  }

  // A dashed vertical line where each run of a followed workload began (experiment --dashboard).
  function runMarks(c) {
    events.forEach(function (e) {
      if (e.type !== "run" || e.t < c.t0) return;
      var line = el("line", { x1: c.x(e.t), x2: c.x(e.t), y1: c.T, y2: c.H - c.B, stroke: "var(--fg)",
        "stroke-dasharray": "2 3", opacity: 0.6, "class": "runmark" });
      line.appendChild(el("title", {}, clock(e.t) + " " + e.label + " (" + e.topic + ")"));
      c.svg.appendChild(line);
    });
    return c;
  }

  function statusCell(s) { return '<td class="st-' + esc(s) + '">' + esc(s) + "</td>"; }

  function renderHealth() {
    var pills = [];
    var add = function (name, h) {
      pills.push('<span class="pill' + (h.up ? "" : " down") + '" data-source="' + esc(name) +
        '" data-up="' + (h.up ? 1 : 0) + '" title="' + esc(h.error || "up") + '">' + esc(name) +
        (h.up ? " up" : " DOWN: " + esc(h.error || "")) + "</span>");
    };
    add("kafka", snap.kafka);
    add("fence tail", snap.fences);
    snap.targets.forEach(function (t) { add(t.kind + " " + t.url, t); });
    $("health").innerHTML = pills.join("");
  }

  function renderPartitions() {
    barChart($("c-partitions"), snap.partitions, snap.bound);
    var groups = [];
    snap.partitions.forEach(function (p) {
      p.lag.forEach(function (l) { if (groups.indexOf(l.group) < 0) groups.push(l.group); });
    });
    var head = ["partition", "rate rec/s", { label: "× bound", cls: "hide-narrow" }, "end offset",
      { label: "produced", cls: "hide-narrow" }];
    groups.forEach(function (g) {
      var pre = groups.length > 1 ? g + " " : "";
      head.push(pre + "lag rec", pre + "lag s", pre + "drain", pre + "status", { label: pre + "owner", cls: "hide-narrow" });
    });
    var rows = snap.partitions.map(function (p) {
      var ratio = snap.bound.bound > 0 && p.rate !== undefined ? p.rate / snap.bound.bound : null;
      var cells = '<tr class="partition" data-partition="' + p.p + '" data-rate="' + (p.rate === undefined ? "" : p.rate) +
        '" data-end="' + (p.end === undefined ? "" : p.end) + '" data-produced="' + (p.produced === undefined ? "" : p.produced) + '">' +
        "<td>" + p.p + "</td><td" + (ratio > 1.05 ? ' class="over"' : "") + ">" + num(p.rate, 1) + "</td>" +
        '<td class="hide-narrow">' + (ratio === null ? "–" : ratio.toFixed(2)) + "</td><td>" + num(p.end) +
        '</td><td class="hide-narrow">' + num(p.produced) + "</td>";
      groups.forEach(function (g) {
        var l = p.lag.filter(function (x) { return x.group === g; })[0];
        if (!l) { cells += "<td>–</td><td>–</td><td>–</td><td>–</td><td class=\"hide-narrow\">–</td>"; return; }
        cells += '<td data-lag="' + l.lag + '">' + num(l.lag) + "</td><td>" + secs(l.lag_s) + "</td><td>" +
          (l.lag === 0 ? "0 s" : secs(l.drain_s)) + "</td>" + statusCell(l.status) +
          '<td class="l hide-narrow">' + esc(l.owner || "unknown") + "</td>";
      });
      return cells + "</tr>";
    });
    table("t-partitions", head, rows, snap.kafka.up ? "no partitions yet" : "Kafka unreachable: " + (snap.kafka.error || ""));
  }

  function renderGroups() {
    table("t-groups", ["group", "state", "members", "status", "lag rec", "max lag s", "drain", "consumed rec/s"],
      snap.groups.map(function (g) {
        return '<tr data-group="' + esc(g.group) + '"><td>' + esc(g.group) + "</td><td>" + esc(g.state) + "</td><td>" +
          (g.members === undefined ? "?" : g.members) + "</td>" + statusCell(g.status) + "<td>" + num(g.lag) +
          "</td><td>" + secs(g.lag_s) + "</td><td>" + (g.lag === 0 ? "0 s" : secs(g.drain_s)) + "</td><td>" + num(g.rate, 1) + "</td></tr>";
      }), "no --group given");
  }

  function renderHot() {
    table("t-hot", ["key", "rate rec/s", "records", "home", "current", "moves", { label: "source", cls: "hide-narrow" }],
      snap.hot_keys.map(function (h) {
        var away = h.current !== undefined && h.home !== undefined && h.current !== h.home;
        return '<tr class="hotkey" data-key="' + esc(h.key) + '" data-rate="' + h.rate + '" data-records="' + h.records +
          '"><td class="key l" title="' + esc(h.key) + '">' + esc(h.key) + "</td><td>" + num(h.rate, 1) + "</td><td>" +
          num(h.records) + "</td><td>" + (h.home === undefined ? "?" : h.home) + "</td><td" + (away ? ' class="over"' : "") +
          ">" + (h.current === undefined ? "home" : h.current) + "</td><td>" + h.moves +
          '</td><td class="l hide-narrow">' + esc(h.source) + "</td></tr>";
      }), "no hot keys: scrape a gateway or proxy with --scrape");
  }

  function renderMoves() {
    var moves = events.filter(function (e) { return e.type === "move"; });
    var c = runMarks(lineChart($("c-moves"), history, [
      { key: "parked", label: "records parked in workers", color: "var(--b)" },
      { key: "moves", label: "moves since start", color: "var(--a)", right: true }
    ], ["records parked", "moves"]));
    moves.forEach(function (m) {
      if (m.t < c.t0) return;
      var dot = el("circle", { cx: c.x(m.t), cy: c.H - c.B - 4, r: 4, fill: "var(--d)", opacity: 0.8 });
      dot.appendChild(el("title", {}, clock(m.t) + " " + m.key + ": " + m.from + " → " + (m.to === undefined ? "?" : m.to)));
      c.svg.appendChild(dot);
    });
    var rows = events.filter(function (e) { return e.type === "move" || e.type === "run"; })
      .slice(-200).reverse().map(function (m) {
      if (m.type === "run") {
        return '<tr class="runstart" data-topic="' + esc(m.topic) + '"><td>' + clock(m.t) +
          '</td><td class="l" colspan="5">now showing ' + esc(m.label) + " · topic " + esc(m.topic) + "</td></tr>";
      }
      var why = [];
      if (m.from_load !== undefined) why.push("p" + m.from + " at " + m.from_load.toFixed(2) + "× bound");
      if (m.key_rate !== undefined) why.push("key " + num(m.key_rate, 1) + " rec/s");
      return '<tr class="move" data-key="' + esc(m.key) + '" data-from="' + m.from + '" data-to="' +
        (m.to === undefined ? "" : m.to) + '"><td>' + clock(m.t) + '</td><td class="key l" title="' + esc(m.key) + '">' +
        esc(m.key) + "</td><td>" + m.from + " → " + (m.to === undefined ? "?" : m.to) + "</td><td>" +
        (m.set === undefined ? "–" : m.set) + '</td><td class="hide-narrow">' + m.offset + '</td><td class="l">' +
        esc(why.join(", ") || "–") + "</td></tr>";
    });
    var park = snap.consumers.filter(function (w) { return w.park_p50 !== undefined; }).map(function (w) {
      return "park p50 " + secs(w.park_p50) + " / p99 " + secs(w.park_p99);
    });
    table("t-moves", ["time", "key", "partition", "set", { label: "fence offset", cls: "hide-narrow" },
      "context (when the fence was read)" + (park.length ? " · " + park[0] : "")], rows,
      snap.fences.up ? "no moves seen since the dashboard started" : "fence tail down: " + (snap.fences.error || ""));
  }

  function renderConsumers() {
    table("t-consumers", ["worker", "partitions", "processed rec/s", "pending", "parked", "fences/s", "rebalances", "park p50", "violations"],
      snap.consumers.map(function (w) {
        return '<tr class="consumer" data-url="' + esc(w.url) + '"><td class="l">' + esc(w.url.replace(/^https?:\/\//, "")) +
          "</td><td>" + w.owned + "</td><td>" + num(w.rate, 1) + "</td><td>" + num(w.pending) + "</td><td>" +
          num(w.parked) + "</td><td>" + num(w.fences_rate, 2) + "</td><td>" + w.rebalances + "</td><td>" +
          secs(w.park_p50) + "</td><td" + (w.violations > 0 ? ' class="over"' : "") + ">" + w.violations + "</td></tr>";
      }), "no worker scraped");
    table("t-producers", ["gateway", "strategy", "rec/s", "moves", "fences", "migrations", "fence failures", "held now", "fence rtt p50"],
      snap.producers.map(function (g) {
        return '<tr class="producer"><td class="l">' + esc(g.url.replace(/^https?:\/\//, "")) + "</td><td>" + esc(g.strategy) +
          "</td><td>" + num(g.rate, 1) + "</td><td>" + g.moves + "</td><td>" + g.fences + "</td><td>" + g.migrations +
          "</td><td>" + g.fence_failures + "</td><td>" + g.held + "</td><td>" + secs(g.fence_rtt_p50) + "</td></tr>";
      }), "no gateway scraped");
  }

  function renderAutoscale() {
    table("t-autoscale", ["autoscaler", "group", "kafka", "desired", "current", "lag rec", "lag s", "ups", "downs"],
      snap.autoscalers.map(function (a) {
        return '<tr><td class="l">' + esc(a.url.replace(/^https?:\/\//, "")) + "</td><td>" + esc(a.group) + "</td><td>" +
          (a.kafka_up ? "up" : '<span class="over">down</span>') + "</td><td>" + num(a.desired) + "</td><td>" +
          num(a.current) + "</td><td>" + num(a.lag) + "</td><td>" + secs(a.lag_s) + "</td><td>" + a.ups + "</td><td>" + a.downs + "</td></tr>";
      }), "no autoscaler scraped");
    var rows = events.filter(function (e) { return e.type === "scale"; }).slice(-100).reverse().map(function (e) {
      return '<tr class="decision"><td>' + clock(e.t) + "</td><td>" + esc(e.group) + "</td><td>" + num(e.from) + " → " +
        num(e.to) + '</td><td class="l">lag ' + num(e.lag) + " records, " + secs(e.lag_s) + "</td></tr>";
    });
    table("t-decisions", ["time", "group", "desired replicas", "reason (lag it decided on)"], rows, "no decision changes seen");
  }

  function renderProxy() {
    var box = $("c-proxy");
    if (!snap.proxies.length) { box.innerHTML = '<div class="empty">no proxy scraped</div>'; return; }
    box.innerHTML = snap.proxies.map(function (p) {
      var bars = function (items, what) {
        var max = Math.max.apply(null, items.map(function (i) { return i.rate; }).concat([1e-9]));
        return '<table><thead><tr><th>' + what + '</th><th>req/s</th><th></th></tr></thead><tbody>' +
          items.map(function (i) {
            return '<tr data-name="' + esc(i.name) + '"><td class="l">' + esc(i.name) + "</td><td>" + num(i.rate, 1) +
              '</td><td class="l" style="width:40%"><span class="bar" style="width:' + (100 * i.rate / max).toFixed(1) + '%"></span></td></tr>';
          }).join("") + "</tbody></table>";
      };
      return '<div class="empty">' + esc(p.url) + " · errors " + num(p.errors_rate, 2) + "/s</div>" +
        bars(p.apis, "API") + bars(p.clients, "client id");
    }).join("");
  }

  function render() {
    $("topic").textContent = "· " + snap.topic;
    $("run").textContent = snap.run ? "· " + snap.run : "";
    $("interval").textContent = String(interval);
    document.documentElement.setAttribute("data-seq", String(snap.seq));
    renderHealth();
    renderPartitions();
    runMarks(lineChart($("c-rate"), history, [
      { key: "rate", label: "total records/s", color: "var(--a)" },
      { key: "hottest", label: "hottest partition", color: "var(--b)" },
      { key: "bound", label: "bound", color: "var(--fg)", dash: true }
    ], ["records/s"]));
    runMarks(lineChart($("c-lag"), history, [
      { key: "lag", label: "lag, records", color: "var(--a)" },
      { key: "lag_s", label: "max lag, seconds", color: "var(--b)", right: true }
    ], ["records", "seconds"]));
    renderGroups();
    renderHot();
    renderMoves();
    renderConsumers();
    renderAutoscale();
    renderProxy();
  }

  function apply(u) {
    snap = u.snapshot;
    history.push(u.point);
    events = events.concat(u.events);
    // Keep what the server keeps: the same history window.
    var oldest = u.point.t - historySecs;
    while (history.length && history[0].t < oldest) history.shift();
    while (events.length > 1000 || (events.length && events[0].t < oldest)) events.shift();
    render();
  }

  render();
  // Charts are drawn at the container's width (so text keeps its size): redraw on resize.
  window.addEventListener("resize", render);
  var live = $("live");
  var source = new EventSource("events");
  source.addEventListener("update", function (e) {
    apply(JSON.parse(e.data));
    live.className = "live on";
    live.textContent = "live · update " + snap.seq + " · " + clock(snap.t);
  });
  source.onerror = function () {
    live.className = "live off";
    live.textContent = "disconnected, retrying…";
  };
})();
