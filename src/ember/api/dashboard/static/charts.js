// Time-series charts drawn by uPlot (loaded as a classic script: window.uPlot).

import { html, useEffect, useRef } from "./vendor/preact-htm.js";

const COLORS = ["#e4572e", "#2e86ab", "#6a994e", "#8e5ea2", "#f2a541"];

// A line chart of one or more series over shared times (UNIX seconds). The chart is made once
// and fed new data in place, so live updates do not flicker or lose the cursor.
// `span` ([from, to], UNIX seconds) fixes the time axis to the range asked for, so a chart with
// one point or none still shows the whole range rather than years around a lone point.
export function Chart({ title, times, series, format = (v) => String(v), id, span }) {
  const box = useRef(null);
  const plot = useRef(null);
  const spanNow = useRef(span);
  spanNow.current = span;
  const shape = series.map((s) => s.label).join("|");

  useEffect(() => {
    const width = Math.max(280, box.current.clientWidth);
    const options = {
      width,
      height: 180,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, range: (u, min, max) => spanNow.current || [min, max] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{}, { values: (u, ticks) => ticks.map(format), size: 70 }],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.color || COLORS[i % COLORS.length],
          width: 2,
          spanGaps: Boolean(s.spanGaps),
          value: (u, v) => (v === null || v === undefined ? "–" : format(v)),
          // Points where data is sparse: a lone value has no line to show it.
          points: { show: (u, index) => u.data[index].filter((v) => v !== null && v !== undefined).length < 40 },
        })),
      ],
    };
    plot.current = new window.uPlot(options, [times, ...series.map((s) => s.values)], box.current);
    const resize = new ResizeObserver(() => {
      plot.current.setSize({ width: Math.max(280, box.current.clientWidth), height: 180 });
    });
    resize.observe(box.current);
    return () => {
      resize.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [shape]);

  useEffect(() => {
    if (plot.current) plot.current.setData([times, ...series.map((s) => s.values)]);
  }, [times, series]);

  const latest = series.map((s) => [s.label, [...s.values].reverse().find((v) => v !== null && v !== undefined)]);
  return html`
    <figure class="chart" id=${id} data-points=${times.length}>
      <figcaption>${title}</figcaption>
      <div ref=${box} role="img" aria-label=${`${title}: ${latest.map(([l, v]) => `${l} ${v === undefined ? "none" : format(v)}`).join(", ")}`}></div>
    </figure>`;
}

const PHASE_ORDER = ["place", "host_wait", "fork", "spawn", "load", "setup"];

// Each cold start as a bar of its phases: what a start spends its time on, at a glance.
export function StartPhases({ starts }) {
  if (!starts.length) return html`<p class="muted">No replica started in this range.</p>`;
  const longest = Math.max(...starts.map((s) => s.seconds || 0), 0.001);
  return html`
    <table class="starts">
      <caption class="sr-only">Replica starts, with their phases</caption>
      <thead><tr><th scope="col">when</th><th scope="col">tier</th><th scope="col">total</th><th scope="col">phases</th><th scope="col">first prediction</th></tr></thead>
      <tbody>
        ${starts.slice().reverse().map((start) => {
          const measured = PHASE_ORDER.filter((p) => start.phases[p] !== undefined);
          const known = measured.reduce((sum, p) => sum + start.phases[p], 0);
          // Shares scaled to 1000: flex-grow factors that sum below 1 fill only part of the bar.
          const grow = (value) => (1000 * value) / (start.seconds || 1);
          const parts = [...measured.map((p) => [p, start.phases[p]]), ["wait", Math.max(0, start.seconds - known)]];
          return html`
            <tr>
              <td>${new Date(start.at * 1000).toLocaleTimeString()}</td>
              <td><span class=${`badge tier-${start.tier}`}>${start.tier}</span>${start.ok ? "" : html` <span class="badge status-failed">failed</span>`}</td>
              <td>${fmt(start.seconds)}</td>
              <td>
                <div class="phase-bar" style=${`width:${Math.max(4, (100 * start.seconds) / longest)}%`}>
                  ${parts.filter(([, v]) => v > 0).map(([name, value]) => html`
                    <span class=${`phase phase-${name}`} style=${`flex-grow:${grow(value)}`} title=${`${name}: ${fmt(value)}`}>${name} ${fmt(value)}</span>`)}
                </div>
              </td>
              <td>${start.phases.first_prediction === undefined ? "–" : fmt(start.phases.first_prediction)}</td>
            </tr>`;
        })}
      </tbody>
    </table>`;
}

function fmt(value) {
  return value < 1 ? `${(value * 1000).toFixed(0)} ms` : `${value.toFixed(2)} s`;
}
