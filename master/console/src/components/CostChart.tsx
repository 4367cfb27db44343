import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { seriesColor } from "./Chart";

/** One stacked layer: a group's dollars per bucket. */
export interface CostLayer {
  key: string;
  label: string;
  values: number[];
  idle?: boolean;
}

interface Props {
  /** `<figure data-testid>`: "chart-cost-usd". */
  testid: string;
  title: string;
  /** Bucket starts and ends, epoch seconds. */
  starts: number[];
  ends: number[];
  layers: CostLayer[];
  /** The x axis's range, epoch seconds (costseries' chartXRange); null: uPlot's own. */
  xRange: [number, number] | null;
  height?: number;
}

/** Axis labels in dollars with as many decimals as the tick step needs ($0.005, $0.010…). */
export function usdTicks(splits: number[]): string[] {
  const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 1;
  const decimals = step > 0 ? Math.min(6, Math.max(2, Math.ceil(-Math.log10(step)))) : 2;
  return splits.map((v) => `$${v.toFixed(decimals)}`);
}

export const IDLE_COLOR = "hsl(0, 0%, 62%)";

/** Running sums of the layers, top layer first: uPlot draws series in order, so the tallest
 * bar (everything) goes first and each lower stack is drawn over it. */
export function stack(layers: CostLayer[]): number[][] {
  const sums: number[][] = [];
  let running = layers.length ? layers[0].values.map(() => 0) : [];
  for (const layer of layers) {
    running = running.map((v, i) => v + (layer.values[i] ?? 0));
    sums.push(running);
  }
  return sums.reverse();
}

/** uPlot options for the stacked bars: series top layer first (see stack), the x scale over
 * `xRange()` when it gives one — read on every redraw, so a preset that moves with the clock
 * moves the axis without a new chart. */
export function costChartOptions(
  layers: CostLayer[],
  colors: string[],
  xRange: () => [number, number] | null,
  width: number,
  height: number,
): uPlot.Options {
  const bars = uPlot.paths.bars!({ size: [0.85, 80] });
  const reversed = [...layers].reverse();
  const reversedColors = [...colors].reverse();
  return {
    width,
    height,
    legend: { show: false },
    cursor: { points: { show: false }, drag: { x: false, y: false } },
    scales: {
      x: {
        time: true,
        range: (_u, min, max) => xRange() ?? [min, max],
      },
      y: { auto: true, range: (_u, _min, max) => [0, max || 1] },
    },
    axes: [{}, { size: 70, values: (_u: uPlot, splits: number[]) => usdTicks(splits) }],
    series: [
      {},
      ...reversed.map((layer, i) => ({
        label: layer.label,
        stroke: reversedColors[i],
        fill: reversedColors[i],
        width: 0,
        paths: bars,
        points: { show: false },
      })),
    ],
  };
}

/** Stacked bars of dollars per time bucket (uPlot), one colour per group, idle in grey with
 * a hatched legend swatch; `data-points` counts the bars with a value. */
export function CostChart({ testid, title, starts, ends, layers, xRange, height = 240 }: Props) {
  const holder = useRef<HTMLDivElement>(null);
  const rangeRef = useRef(xRange);
  rangeRef.current = xRange;
  const plot = useRef<uPlot | null>(null);
  const shape = `${layers.map((l) => l.key).join("\u0000")}|${starts.length}`;
  const shapeRef = useRef("");
  const colors = layers.map((l, i) => (l.idle ? IDLE_COLOR : seriesColor(i)));
  const mids = starts.map((s, i) => (s + (ends[i] ?? s)) / 2);
  const stacked = stack(layers);
  const data = [mids, ...stacked] as uPlot.AlignedData;

  useEffect(() => {
    const el = holder.current;
    if (!el) return;
    if (plot.current && shapeRef.current === shape) {
      plot.current.setData(data);
      return;
    }
    plot.current?.destroy();
    shapeRef.current = shape;
    plot.current = new uPlot(
      costChartOptions(layers, colors, () => rangeRef.current, Math.max(200, el.clientWidth), height),
      data,
      el,
    );
  });

  useEffect(() => {
    const el = holder.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() =>
      plot.current?.setSize({ width: Math.max(200, el.clientWidth), height }),
    );
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

  const points = layers.reduce((n, l) => n + l.values.filter((v) => v > 0).length, 0);
  return (
    <figure class="chart" data-testid={testid} data-points={points}>
      <figcaption>
        <strong>{title}</strong>
      </figcaption>
      <div ref={holder} class="chart-plot" />
      {layers.length > 0 ? (
        <ul class="legend" aria-label={`${title} legend`}>
          {layers.map((layer, i) => (
            <li key={layer.key}>
              <span
                class={layer.idle ? "swatch block idle" : "swatch block"}
                style={{ background: colors[i] }}
                aria-hidden="true"
              />
              {layer.label}
            </li>
          ))}
        </ul>
      ) : (
        <p class="muted">Nothing cost anything in this range.</p>
      )}
    </figure>
  );
}
