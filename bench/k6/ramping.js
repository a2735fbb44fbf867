// Ramping arrival rate: from 1,000/s up to MAX/s in STEPS steps of STEP_S seconds each.
// The highest rate sustained without errors is read from the per-second results.
//   k6 run -e MAX=30000 bench/k6/ramping.js        (BASE defaults to http://127.0.0.1:8000)
import http from "k6/http";
import exec from "k6/execution";
import { BASE, purchase } from "./lib.js";

const RUN = `${Date.now()}`;
const MAX = Number(__ENV.MAX || 30000);
const STEPS = Number(__ENV.STEPS || 10);
const STEP_S = Number(__ENV.STEP_S || 5);

export const options = {
  discardResponseBodies: true,
  scenarios: {
    ramp: {
      executor: "ramping-arrival-rate",
      startRate: 1000,
      timeUnit: "1s",
      preAllocatedVUs: 300,
      maxVUs: 2000,
      stages: Array.from({ length: STEPS }, (_, i) => ({
        target: Math.round(1000 + ((MAX - 1000) * (i + 1)) / STEPS),
        duration: `${STEP_S}s`,
      })),
    },
  },
};

export default function () {
  const id = `ramp-${RUN}-${exec.scenario.iterationInTest}`;
  http.post(`${BASE}/purchase`, purchase(id), {
    headers: { "Content-Type": "application/json" },
    tags: { rate_step: `${Math.floor(exec.scenario.progress * STEPS)}` },
  });
}
