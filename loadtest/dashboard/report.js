/* Draws the report's charts (report-data: the same specs the report
   builder turns into SVG files) with Chart.js, when it loaded; else the
   SVG files stand in.  Keys: arrows / PageUp / PageDown move a slide,
   t switches the theme, f full screen.  ?only=ID shows one chart alone
   (the PNG export). */
"use strict";

const SPEC = JSON.parse(document.getElementById("report-data").textContent);
const PALETTE = ["#1f6fd1", "#e8710a", "#1e9e52", "#c2185b", "#7b4fd6",
                 "#b8860b", "#00838f", "#d32f2f"];
const params = new URLSearchParams(location.search);
const only = params.get("only");
const charts = [];

function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function fmt(v) {
  if (v === null || v === undefined) return "";
  const a = Math.abs(v);
  if (a >= 1e6) return +(v / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return +(v / 1e3).toFixed(1) + "k";
  if (a >= 100) return Math.round(v).toLocaleString("en-US");
  return +v.toPrecision(3) + "";
}

/* The value above each bar: read from the back row without a tooltip. */
const barValues = {
  id: "barValues",
  afterDatasetsDraw(chart) {
    if (chart.config.type !== "bar") return;
    const ctx = chart.ctx;
    ctx.save();
    ctx.fillStyle = css("--fg");
    ctx.font = "bold 24px DejaVu Sans, sans-serif";
    ctx.textAlign = "center";
    chart.data.datasets.forEach((d, i) => {
      chart.getDatasetMeta(i).data.forEach((el, j) => {
        const v = d.data[j];
        if (v !== null && v !== undefined) ctx.fillText(fmt(v), el.x, el.y - 8);
      });
    });
    ctx.restore();
  },
};

function config(c) {
  const font = { size: 24 };
  const cat = Array.isArray(c.x.labels);
  const axis = (t, extra, categories) => {
    const ticks = { font, color: css("--fg") };
    if (!categories) ticks.callback = fmt;   // categories keep their labels
    return Object.assign({
      title: { display: true, text: t, font, color: css("--fg") },
      ticks, grid: { color: css("--grid") },
    }, extra || {});
  };
  const scales = {
    x: axis(c.x.title, cat ? {} : { type: "linear" }, cat),
    y: axis(c.y.title, c.y.log ? { type: "logarithmic" } : { beginAtZero: true, grace: "10%" }),
  };
  if (c.x.integer) scales.x.ticks.stepSize = 1;   // counts: no 1.5 servers
  if (c.y2) scales.y2 = axis(c.y2.title, { position: "right", beginAtZero: true, grace: "10%", grid: { drawOnChartArea: false } });
  const datasets = c.datasets.map((d, i) => {
    const col = d.color || PALETTE[i % PALETTE.length];
    return {
      label: d.label, yAxisID: d.axis || "y", borderColor: col,
      backgroundColor: col, borderDash: d.dash ? [10, 6] : [],
      borderWidth: 3, pointRadius: cat ? 0 : (d.dash ? 0 : 5),
      data: cat ? d.data : d.data.map(p => ({ x: p[0], y: p[1] })),
    };
  });
  return {
    type: c.kind === "bar" ? "bar" : "line",
    data: cat ? { labels: c.x.labels, datasets } : { datasets },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      layout: { padding: { top: 10 } },
      scales,
      plugins: {
        title: { display: true, text: c.title, font: { size: 32, weight: "bold" }, color: css("--fg") },
        legend: { labels: { font, color: css("--fg"), boxWidth: 20 } },
      },
    },
    plugins: [barValues],
  };
}

function draw() {
  charts.forEach(ch => ch.destroy());
  charts.length = 0;
  SPEC.charts.forEach(c => {
    const el = document.getElementById("c-" + c.id);
    if (el) charts.push(new Chart(el, config(c)));
  });
}

if (only) {
  document.body.classList.add("only");
  const s = document.getElementById("s-" + only);
  if (s) s.classList.add("shown");
}
if (params.get("theme")) document.documentElement.dataset.theme = params.get("theme");
if (typeof Chart !== "undefined") {
  document.body.classList.add("charted");
  draw();
}

document.querySelectorAll("button[data-png]").forEach(b => b.addEventListener("click", () => {
  const i = SPEC.charts.findIndex(c => c.id === b.dataset.png);
  if (i < 0 || !charts[i]) return;
  const a = document.createElement("a");
  a.href = charts[i].toBase64Image();
  a.download = b.dataset.png + ".png";
  a.click();
}));

document.addEventListener("keydown", e => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const slides = [...document.querySelectorAll(".slide")];
  const cur = Math.round(window.scrollY / window.innerHeight);
  if (["ArrowRight", "ArrowDown", "PageDown", " "].includes(e.key)) {
    e.preventDefault();
    const s = slides[Math.min(cur + 1, slides.length - 1)];
    if (s) s.scrollIntoView();
  } else if (["ArrowLeft", "ArrowUp", "PageUp"].includes(e.key)) {
    e.preventDefault();
    const s = slides[Math.max(cur - 1, 0)];
    if (s) s.scrollIntoView();
  } else if (e.key === "t") {
    const r = document.documentElement;
    r.dataset.theme = r.dataset.theme === "dark" ? "light" : "dark";
    if (typeof Chart !== "undefined") draw();
  } else if (e.key === "f") {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen().catch(() => {});
  }
});
