// Copper dashboard pictures: Chart.js (served from node_modules) draws the JSON gcd serves.
/* global Chart, document, fetch */
(function () {
  'use strict';
  const COLORS = ['#b35c1e', '#2f6f9f', '#3c8d2f', '#8e44ad', '#c0392b', '#16a085', '#7f8c8d'];
  const userColor = new Map();
  function colorOf(user) {
    if (!userColor.has(user)) userColor.set(user, COLORS[userColor.size % COLORS.length]);
    return userColor.get(user);
  }
  function hhmm(ms) {
    return new Date(ms).toISOString().slice(11, 19);
  }
  async function getJson(url) {
    const r = await fetch(url, { credentials: 'same-origin' });
    if (!r.ok) throw new Error(url + ': ' + r.status);
    return r.json();
  }

  async function drawTimeline(canvas) {
    const { bars, now } = await getJson('/api/timeline');
    // The axis spans the jobs shown (a bar chart's axis would otherwise start at 1970).
    const first = bars.length ? Math.min(...bars.map((b) => b.start)) : now - 3600e3;
    const pad = Math.max(1000, (now - first) * 0.02);
    const labels = bars.map((b) => b.id + ' ' + b.name);
    const users = [...new Set(bars.map((b) => b.user))];
    const datasets = users.map((u) => ({
      label: u,
      data: bars.map((b) => (b.user === u ? [b.start, b.end] : null)),
      backgroundColor: colorOf(u),
      borderSkipped: false,
      grouped: false,
    }));
    canvas.parentElement.style.height = Math.max(160, 40 + bars.length * 26) + 'px';
    new Chart(canvas, {
      type: 'bar',
      data: { labels, datasets },
      options: {
        indexAxis: 'y',
        maintainAspectRatio: false,
        animation: false,
        scales: { x: { type: 'linear', beginAtZero: false, min: first - pad, max: now + pad, ticks: { callback: (v) => hhmm(v) } }, y: { stacked: true } },
        plugins: {
          tooltip: {
            callbacks: {
              label: (c) => {
                const b = bars[c.dataIndex];
                return `${b.user}: ${hhmm(b.start)} – ${hhmm(b.end)} (${b.state}${b.exitStatus !== undefined ? ', exit ' + b.exitStatus : ''})`;
              },
            },
          },
        },
      },
    });
    canvas.dataset.bars = String(bars.length);
  }

  async function drawSamples(depth, util) {
    const { samples } = await getJson('/api/samples');
    const labels = samples.map((s) => hhmm(s.t));
    const common = { animation: false, maintainAspectRatio: false, elements: { point: { radius: 0 } }, interaction: { intersect: false, mode: 'index' } };
    new Chart(depth, {
      type: 'line',
      data: {
        labels,
        datasets: [
          { label: 'queued', data: samples.map((s) => s.queued), borderColor: '#b35c1e', backgroundColor: 'rgba(179,92,30,.2)', fill: true, stepped: true },
          { label: 'running', data: samples.map((s) => s.running), borderColor: '#2f6f9f', stepped: true },
        ],
      },
      options: { ...common, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    new Chart(util, {
      type: 'line',
      data: {
        labels,
        datasets: [
          {
            label: 'cpus in use (%)',
            data: samples.map((s) => (s.ncpusTotal ? (100 * s.ncpusUsed) / s.ncpusTotal : 0)),
            borderColor: '#3c8d2f',
            stepped: true,
          },
          {
            label: 'memory in use (%)',
            data: samples.map((s) => (s.memMiBTotal ? (100 * s.memMiBUsed) / s.memMiBTotal : 0)),
            borderColor: '#8e44ad',
            stepped: true,
          },
        ],
      },
      options: { ...common, scales: { y: { beginAtZero: true, max: 100 } } },
    });
    depth.dataset.samples = String(samples.length);
  }

  const t = document.getElementById('timeline');
  if (t)
    drawTimeline(t).then(
      () => (document.body.dataset.drawn = '1'),
      (e) => (document.body.dataset.drawn = 'error: ' + e.message),
    );
  const d = document.getElementById('depth');
  const u = document.getElementById('util');
  if (d && u)
    drawSamples(d, u).then(
      () => (document.body.dataset.drawn = '1'),
      (e) => (document.body.dataset.drawn = 'error: ' + e.message),
    );
})();
