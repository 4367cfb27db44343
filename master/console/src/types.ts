// Shapes of the master's REST API (camelCase JSON, Determined's names) that views read.
// Fields the console does not use are left out; optional ones may be missing on older masters.

export interface User {
  id: number;
  username: string;
  admin: boolean;
  active: boolean;
  displayName: string;
  lastAuthAt?: string | null;
}

export interface LoginReply {
  token: string;
  csrfToken?: string;
  user: User;
}

export type ExperimentState =
  | "STATE_ACTIVE"
  | "STATE_PAUSED"
  | "STATE_STOPPING_COMPLETED"
  | "STATE_STOPPING_CANCELED"
  | "STATE_STOPPING_ERROR"
  | "STATE_STOPPING_KILLED"
  | "STATE_COMPLETED"
  | "STATE_CANCELED"
  | "STATE_ERROR"
  | "STATE_DELETING"
  | string;

export interface Experiment {
  id: number;
  name: string;
  description?: string;
  labels: string[];
  startTime: string;
  endTime?: string | null;
  state: ExperimentState;
  stateReason?: string | null;
  archived: boolean;
  numTrials: number;
  trialIds?: number[];
  userId?: number;
  username: string;
  resourcePool?: string;
  searcherType?: string;
  searcherMetric?: string;
  hyperparameters?: Record<string, unknown>;
  progress?: number | null;
  config?: Record<string, unknown>;
  originalConfig?: string;
  bestTrialId?: number | null;
  bestTrialSearcherMetric?: number | null;
  checkpointCount?: number;
  /** Determined's milliseconds; the console computes durations from start/end instead. */
  duration?: number | null;
  costUsd?: number | null;
}

export interface MetricsWorkload {
  endTime?: string | null;
  metrics: { avgMetrics: Record<string, unknown> };
  totalBatches: number;
}

export interface Trial {
  id: number;
  experimentId: number;
  state: string;
  stateReason?: string | null;
  startTime: string;
  endTime?: string | null;
  hparams: Record<string, unknown>;
  restarts: number;
  totalBatchesProcessed: number;
  progress?: number | null;
  bestValidation?: MetricsWorkload | null;
  latestValidation?: MetricsWorkload | null;
  bestValidationMetric?: MetricsWorkload | null;
  latestValidationMetric?: MetricsWorkload | null;
  searcherMetricValue?: number | null;
  checkpointCount?: number;
  duration?: number | null;
  wallClockTime?: number | null;
  taskId?: string | null;
}

export interface Checkpoint {
  uuid: string;
  taskId?: string;
  reportTime?: string | null;
  resources: Record<string, string>;
  state: string;
  training?: { trialId?: number; experimentId?: number; searcherMetric?: number | null };
  metadata?: Record<string, unknown>;
  /** Batches, where the master reports them. */
  totalBatches?: number;
  stepsCompleted?: number;
}

export type MetricGroup = "training" | "validation";

export interface SeriesLine {
  trialId: number;
  group: MetricGroup;
  name: string;
  points: [number, number][];
  total: number;
  downsampled: boolean;
}

export interface SeriesReply {
  cursor: number;
  names: { training: string[]; validation: string[] };
  series: SeriesLine[];
}

export interface Pagination {
  offset: number;
  limit: number;
  startIndex?: number;
  endIndex?: number;
  total: number;
}
