import { useEffect, useRef } from "preact/hooks";
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

  useEffect(() => {
    const el = holder.current;
    if (!el) return;
    if (plot.current && shapeRef.current === shape) {
      // Views re-render every second (clocks); redraw only when the points changed.
      if (samePoints(drawn.current, lines)) return;
      drawn.current = lines;
      plot.current.setData(toData(lines, logScale));
      return;
    }
    const data = toData(lines, logScale);
    drawn.current = lines;
    plot.current?.destroy();
    shapeRef.current = shape;
    const categories = props.xCategories;
    const scatter = kind === "scatter";
    const opts: uPlot.Options = {
      mode: 2 as uPlot.Mode,
      width: Math.max(200, el.clientWidth),
      height,
      legend: { show: false },
      cursor: { drag: { x: true, y: false, setScale: true }, points: { show: false } },
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

  const points = pointCount(lines, logScale);
  return (
    <figure class="chart" data-testid={props.testid} data-points={points}>
      <figcaption>
        <strong>{props.title}</strong>
        <span class="muted">
          {" "}
          · {plural(points, props.unit ?? "point")}{logScale ? " (values ≤ 0 hidden on a log scale)" : ""}
        </span>
      </figcaption>
      <div ref={holder} class="chart-plot" />
      {lines.length > 1 && (
        <ul class="legend" aria-label={`${props.title} legend`}>
          {lines.map((line, i) => (
            <li key={line.label}>
              <span class="swatch" style={{ background: seriesColor(i) }} aria-hidden="true" />
              {line.label}
            </li>
          ))}
        </ul>
      )}
      {lines.length === 0 && <p class="muted">No points yet.</p>}
    </figure>
  );
}
