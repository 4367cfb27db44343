import { formatCountdown, secondsUntil } from "../format";
import { useNow } from "../poll";

/**
 * Seconds left until `deadline` (RFC 3339), ticking every second between polls;
 * `data-seconds` carries the whole seconds for tests. Nothing when there is no deadline.
 */
export function Countdown({
  deadline,
  testid = "idle-countdown",
}: {
  deadline: string | null | undefined;
  testid?: string;
}) {
  const now = useNow(1000);
  if (!deadline) return null;
  const seconds = secondsUntil(deadline, now);
  if (seconds === null) return null;
  const whole = Math.max(0, Math.ceil(seconds));
  return (
    <span data-testid={testid} data-seconds={whole} class="countdown" title={`until ${deadline}`}>
      <span aria-hidden="true">◷ </span>
      {formatCountdown(seconds)}
    </span>
  );
}
