import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { formatMetric } from "../format";

export interface ChartLine {
  label: string;
  points: [number, number][];
}

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
  /** Category names for an x axis of categories (x = index into it). */
  xCategories?: string[];
  height?: number;
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
  const shape = `${kind}|${logScale}|${lines.map((l) => l.label).join("\u0000")}|${
    props.xCategories?.join("\u0000") ?? ""
  }`;
  const shapeRef = useRef("");

  useEffect(() => {
    const el = holder.current;
    if (!el) return;
    const data = toData(lines, logScale);
    if (plot.current && shapeRef.current === shape) {
      plot.current.setData(data);
      return;
    }
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
          ...(categories ? { range: [-0.5, Math.max(0.5, categories.length - 0.5)] } : {}),
        },
        y: { auto: true, distr: logScale ? 3 : 1 },
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
          width: scatter ? 0 : 1.5,
          facets: [
            { scale: "x", auto: true },
            { scale: "y", auto: true },
          ],
          paths: scatter ? () => null : undefined,
          points: scatter
            ? { show: true, size: 7, stroke: seriesColor(i), fill: seriesColor(i) }
            : { show: false },
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
          · {points.toLocaleString("en-US")} points{logScale ? " (values ≤ 0 hidden on a log scale)" : ""}
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
