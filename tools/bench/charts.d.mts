export interface Series {
  label: string;
  points: [number, number][];
  dashed?: boolean;
}
export function chart(options: { title: string; xLabel: string; yLabel: string; series: Series[]; logY?: boolean }): string;
export function bars(options: { title: string; xLabel: string; items: { label: string; value: number }[]; reference?: number }): string;
/** The standard charts of a results document into `dir`; returns the files written. */
export function plotResults(results: { rows?: object[]; pytorch?: object[] }, dir: string): string[];
