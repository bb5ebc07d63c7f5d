// Stats payloads built for the tests, in the shape of version 2 of the node's `cgtaylor.stats` event
// (per step: why full calls were full, predicted and measured errors; the run's tolerance and
// calibration). stats_fixture.json is a recorded version 1 payload; these cover what it cannot:
// the v2 fields, long notes, and runs of hundreds of steps.

/** Two notes as long as the node's real ones: far more than the chart's footer can show. */
export const LONG_NOTES = [
  "the gate rejected 36 of 38 forecasts because the sampler injects fresh noise every step: in 35 of them block 0 " +
    "jumped off its trend (a forecast along it missed by more than reusing the last value would), so no forecast " +
    "could be trusted; a deterministic sampler (euler, heun, dpmpp_2m, uni_pc) gets the speed-up, or keep this one " +
    "and forecast only what the blocks add to block 0 (forecast_residual on, max_consecutive 1)",
  "a forecast held non-finite values; those calls were computed in full",
];

/** Per-step records from a list of (calls, forecast, {reason: count}) triples, v2 shape. */
function stepsOf(rows, tolerance) {
  const n = rows.length;
  return rows.map(([calls, forecast, full], i) => {
    const judged = !full?.warmup && !full?.edge;
    return {
      step: i,
      sigma: 1 - i / n,
      calls,
      forecast,
      gate_error: judged ? tolerance * 0.5 : null,
      ...(full ? { full } : {}),
      predicted: judged ? tolerance * (full?.gate ? 1.4 : 0.6) : null,
      measured: calls > forecast && judged ? tolerance * 0.5 : null,
    };
  });
}

function totalsOf(steps) {
  const full = {};
  for (const s of steps) for (const [reason, n] of Object.entries(s.full ?? {})) full[reason] = (full[reason] ?? 0) + n;
  const calls = steps.reduce((a, s) => a + s.calls, 0);
  const forecast = steps.reduce((a, s) => a + s.forecast, 0);
  const blocksTotal = calls * 30;
  const blocksRun = blocksTotal - forecast * 28;
  return { calls, forecast, blocks_run: blocksRun, blocks_total: blocksTotal, block_ratio: blocksTotal / blocksRun, full };
}

function payload(node, rows, { tolerance = 0.15, notes = LONG_NOTES } = {}) {
  const steps = stepsOf(rows, tolerance);
  return {
    v: 2, method: "cg-taylor", model: "Wan", node: String(node), threshold: tolerance, tolerance,
    num_steps: steps.length, steps, totals: totalsOf(steps),
    calibration: { pairs: 9, predicted_median: 0.09, predicted_max: 0.21, measured_median: 0.075, measured_max: 0.19, covered: 0.89 },
    notes,
  };
}

/**
 * A 20-step cfg run (two calls a step) with every reason for a full call: warm-up, both edges, a
 * step outside the window, the forecast cap, gate rejections (whole and partial) and a fallback.
 */
export function v2Payload(node) {
  const rows = [
    [2, 0, { warmup: 2 }], [2, 0, { warmup: 2 }], [2, 2], [2, 2], [2, 0, { cap: 2 }], [2, 2], [2, 1, { gate: 1 }],
    [2, 2], [2, 0, { gate: 2 }], [2, 2], [2, 2], [2, 0, { fallback: 2 }], [2, 2], [2, 1, { gate: 1 }], [2, 2],
    [2, 2], [2, 0, { cap: 1, gate: 1 }], [2, 2], [2, 0, { window: 2 }], [2, 0, { edge: 2 }],
  ];
  return payload(node, rows);
}

/** The index of the first v2Payload step whose full calls all had `reason`. */
export const V2_STEP = { warmup: 0, cap: 4, partialGate: 6, gate: 8, fallback: 11, mixed: 16, window: 18, edge: 19 };

/** A run of `steps` steps: forecast throughout but for warm-up, the edges and a full step every `every`. */
export function longRunPayload(node, steps = 600, every = 50) {
  const rows = Array.from({ length: steps }, (_, i) => {
    if (i < 3) return [2, 0, { warmup: 2 }];
    if (i === steps - 1) return [2, 0, { edge: 2 }];
    if (i % every === 0) return [2, 0, { gate: 2 }];
    return [2, 2];
  });
  return payload(node, rows, { notes: [] });
}
