import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { formatMetric, plural } from "../format";
import { samePoints } from "../series";

import type { ChartLine } from "../series";

export type { ChartLine };

interface Props {
  /** The figure's data-testid, e.g. "chart-validation-validation_loss". */
  testid: string;
  title: string;
  lines: ChartLine[];
  xLabel: string;
  yLabel?: string;
  logScale?: boolean;
  /** "line" joins each line's points; "scatter" draws points only (hyperparameter plots). */
  kind?: "line" | "scatter";
  /** A logarithmic x axis (a hyperparameter searched on a log scale). */
  xLog?: boolean;
  /** Category names for an x axis of categories (x = index into it). */
  xCategories?: string[];
  height?: number;
  /** What a point is, for the caption's count ("point", "trial"). */
  unit?: string;
}

/** A colour per series, spread around the wheel so neighbours differ. */
export function seriesColor(i: number): string {
  return `hsl(${Math.round((i * 137.508) % 360)}, 70%, 40%)`;
}

function pointCount(lines: ChartLine[], logScale: boolean): number {
  let n = 0;
  for (const line of lines) {
    n += logScale ? line.points.filter((p) => p[1] > 0).length : line.points.length;
  }
  return n;
}

/** A range that is never empty: a single value (one point, or all at one x) gets padding. */
function padRange(min: number | null, max: number | null, log: boolean): uPlot.Range.MinMax {
  if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) {
    return log ? [0.1, 10] : [0, 1];
  }
  if (min === max) {
    if (log) return [min / 2, max * 2];
    const pad = Math.abs(min) * 0.1 || 1;
    return [min - pad, max + pad];
  }
  if (log) return [min / 1.25, max * 1.25];
  const pad = (max - min) * 0.04;
  return [min - pad, max + pad];
}

type Faceted = [number[], number[]];

/** Dots at every point, in canvas pixels, added to `path`. */
function addDots(u: uPlot, si: number, path: Path2D, radius: number): void {
  const [xs, ys] = u.data[si] as unknown as Faceted;
  const r = radius * uPlot.pxRatio;
  for (let i = 0; i < xs.length; i++) {
    const cx = u.valToPos(xs[i], "x", true);
    const cy = u.valToPos(ys[i], "y", true);
    path.moveTo(cx + r, cy);
    path.arc(cx, cy, r, 0, 2 * Math.PI);
  }
}

const linear = uPlot.paths.linear!();
/** Series this short also get a dot per point (a single validation is otherwise invisible). */
const DOTS_UP_TO = 40;

/** Lines, with dots when a series is short (uPlot's own point markers do not draw in mode 2). */
const linePaths: uPlot.Series.PathBuilder = (u, si, i0, i1) => {
  const paths = linear(u, si, i0, i1);
  const [xs] = u.data[si] as unknown as Faceted;
  if (paths && xs.length <= DOTS_UP_TO && paths.stroke instanceof Path2D) {
    addDots(u, si, paths.stroke, 2);
  }
  return paths;
};

/** Filled dots only (the hyperparameter scatter). */
const dotPaths: uPlot.Series.PathBuilder = (u, si) => {
  const dots = new Path2D();
  addDots(u, si, dots, 4);
  return { stroke: dots, fill: dots, clip: undefined, flags: 0 } as unknown as uPlot.Series.Paths;
};

/** uPlot's faceted data: per series its own [xs, ys] (trials report at different batches). */
function toData(lines: ChartLine[], logScale: boolean): uPlot.AlignedData {
  const data: unknown[] = [null];
  for (const line of lines) {
    const pts = logScale ? line.points.filter((p) => p[1] > 0) : line.points;
    data.push([pts.map((p) => p[0]), pts.map((p) => p[1])]);
  }
  return data as uPlot.AlignedData;
}

/** The index of the x in sorted `xs` closest to `x`. */
function closestIndex(xs: number[], x: number): number {
  let lo = 0;
  let hi = xs.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) lo = mid;
    else hi = mid;
  }
  return Math.abs(xs[lo] - x) <= Math.abs(xs[hi] - x) ? lo : hi;
}

/** The drawn point nearest the cursor (CSS pixels), within `radius`; null if none. */
function nearestPoint(u: uPlot, radius: number): { si: number; i: number; left: number; top: number } | null {
  const { left, top } = u.cursor;
  if (left === undefined || top === undefined || left < 0 || top < 0) return null;
  const x = u.posToVal(left, "x");
  let best: { si: number; i: number; left: number; top: number } | null = null;
  let bestDist = radius;
  for (let si = 1; si < u.series.length; si++) {
    if (!u.series[si].show) continue;
    const [xs, ys] = u.data[si] as unknown as Faceted;
    if (!xs || xs.length === 0) continue;
    const at = closestIndex(xs, x);
    for (const i of [at - 1, at, at + 1]) {
      if (i < 0 || i >= xs.length) continue;
      const px = u.valToPos(xs[i], "x");
      const py = u.valToPos(ys[i], "y");
      const dist = Math.hypot(px - left, py - top);
      if (dist < bestDist) {
        bestDist = dist;
        best = { si, i, left: px, top: py };
      }
    }
  }
  return best;
}

/**
 * A uPlot chart in a <figure data-testid=… data-points=N> (N: points drawn, all series).
 * The plot is rebuilt when the set of series, the scale or the kind changes; otherwise new
 * data is set in place, so live updates keep the reader's zoom cheap.
 */
export function Chart(props: Props) {
  const { lines, logScale = false, kind = "line", height = 260 } = props;
  const holder = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const xLog = !!props.xLog && !props.xCategories;
  const shape = `${kind}|${logScale}|${xLog}|${lines.map((l) => l.label).join("\u0000")}|${
    props.xCategories?.join("\u0000") ?? ""
  }`;
  const shapeRef = useRef("");
  const drawn = useRef<readonly ChartLine[]>([]);
  const tip = useRef<HTMLDivElement>(null);
  const zoomed = useRef(false);
  const [hidden, setHidden] = useState<ReadonlySet<string>>(new Set());
  const hiddenRef = useRef(hidden);
  hiddenRef.current = hidden;

  useEffect(() => {
    const el = holder.current;
    if (!el) return;
    if (plot.current && shapeRef.current === shape) {
      // Views re-render every second (clocks); redraw only when the points changed.
      if (samePoints(drawn.current, lines)) return;
      drawn.current = lines;
      // Keep the reader's zoom while points arrive (double-click resets it).
      plot.current.setData(toData(lines, logScale), !zoomed.current);
      return;
    }
    const data = toData(lines, logScale);
    drawn.current = lines;
    plot.current?.destroy();
    shapeRef.current = shape;
    const categories = props.xCategories;
    const scatter = kind === "scatter";
    zoomed.current = false;
    const showTip = (u: uPlot) => {
      const box = tip.current;
      if (!box) return;
      const hit = nearestPoint(u, 40);
      if (!hit) {
        box.hidden = true;
        return;
      }
      const [xs, ys] = u.data[hit.si] as unknown as Faceted;
      const xText = categories
        ? (categories[Math.round(xs[hit.i])] ?? "")
        : formatMetric(xs[hit.i]);
      box.textContent = `${u.series[hit.si].label} · ${props.xLabel} ${xText} · ${
        props.yLabel ?? "value"
      } ${formatMetric(ys[hit.i])}`;
      box.hidden = false;
      const plotLeft = u.over.offsetLeft;
      const plotTop = u.over.offsetTop;
      box.style.left = `${Math.min(plotLeft + hit.left + 8, u.width - box.offsetWidth - 4)}px`;
      box.style.top = `${plotTop + hit.top + 10}px`;
    };
    const opts: uPlot.Options = {
      mode: 2 as uPlot.Mode,
      width: Math.max(200, el.clientWidth),
      height,
      legend: { show: false },
      cursor: { drag: { x: true, y: false, setScale: true }, points: { show: false } },
      hooks: {
        setCursor: [showTip],
        setSelect: [
          (u: uPlot) => {
            if (u.select.width > 0) zoomed.current = true;
          },
        ],
        ready: [
          (u: uPlot) => {
            u.over.addEventListener("dblclick", () => (zoomed.current = false));
            u.over.addEventListener("mouseleave", () => tip.current && (tip.current.hidden = true));
          },
        ],
      },
      scales: {
        x: {
          time: false,
          auto: true,
          distr: xLog ? 3 : 1,
          range: categories
            ? [-0.5, Math.max(0.5, categories.length - 0.5)]
            : (_u, min, max) => padRange(min, max, xLog),
        },
        y: {
          auto: true,
          distr: logScale ? 3 : 1,
          range: (_u, min, max) => padRange(min, max, logScale),
        },
      },
      axes: [
        {
          label: props.xLabel,
          ...(categories
            ? {
                splits: () => categories.map((_, i) => i),
                values: (_u: uPlot, splits: number[]) => splits.map((i) => categories[i] ?? ""),
              }
            : {}),
        },
        {
          label: props.yLabel,
          size: 60,
          values: (_u: uPlot, splits: number[]) => splits.map((v) => formatMetric(v)),
        },
      ],
      series: [
        {},
        ...lines.map((line, i) => ({
          label: line.label,
          show: !hiddenRef.current.has(line.label),
          stroke: seriesColor(i),
          fill: scatter ? seriesColor(i) : undefined,
          width: scatter ? 1 : 1.5,
          facets: [
            { scale: "x", auto: true },
            { scale: "y", auto: true },
          ],
          paths: scatter ? dotPaths : linePaths,
          points: { show: false },
        })),
      ],
    };
    plot.current = new uPlot(opts, data, el);
  }, [shape, lines, logScale]);

  useEffect(() => {
    const el = holder.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() => {
      plot.current?.setSize({ width: Math.max(200, el.clientWidth), height });
    });
    observer.observe(el);
    return () => observer.disconnect();
  }, [height]);

  useEffect(
    () => () => {
      plot.current?.destroy();
      plot.current = null;
    },
    [],
  );

  const toggle = (label: string, index: number) => {
    const next = new Set(hidden);
    if (next.has(label)) next.delete(label);
    else next.add(label);
    setHidden(next);
    plot.current?.setSeries(index + 1, { show: !next.has(label) });
  };
  const shown = hidden.size ? lines.filter((l) => !hidden.has(l.label)) : lines;
  const points = pointCount(shown, logScale);
  return (
    <figure class="chart" data-testid={props.testid} data-points={points}>
      <figcaption>
        <strong>{props.title}</strong>
        <span class="muted">
          {" "}
          · {plural(points, props.unit ?? "point")}{logScale ? " (values ≤ 0 hidden on a log scale)" : ""}
        </span>
      </figcaption>
      <div class="chart-box">
        <div ref={holder} class="chart-plot" />
        <div ref={tip} class="chart-tip" role="status" hidden />
      </div>
      {lines.length > 1 && (
        <ul class="legend" aria-label={`${props.title} legend (click to hide or show a line)`}>
          {lines.map((line, i) => (
            <li key={line.label}>
              <button
                type="button"
                class="legend-item"
                aria-pressed={!hidden.has(line.label)}
                title={hidden.has(line.label) ? `Show ${line.label}` : `Hide ${line.label}`}
                onClick={() => toggle(line.label, i)}
              >
                <span class="swatch" style={{ background: seriesColor(i) }} aria-hidden="true" />
                {line.label}
              </button>
            </li>
          ))}
        </ul>
      )}
      {lines.length === 0 && <p class="muted">No points yet.</p>}
    </figure>
  );
}
