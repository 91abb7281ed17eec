// k6 side of the round-trip benchmark (bench/run.py): VUS connections (k6/ws), each sends
// the 200-byte JSON request, parses the echo, checks its type and sends again, for HOLD_MS;
// written as a k6 user would. The echo server counts the round trips, for every client alike.
import ws from 'k6/ws';
import { Counter } from 'k6/metrics';

const URL = __ENV.URL;
const HOLD_MS = parseInt(__ENV.HOLD_MS, 10);
const VUS = parseInt(__ENV.VUS, 10);
const pad = 'x'.repeat(200 - '{"type":"ping","pad":""}'.length);
const request = JSON.stringify({ type: 'ping', pad: pad });
const wrongFrames = new Counter('wrong_frames');

export const options = {
  scenarios: {
    round_trips: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${Math.ceil(HOLD_MS / 1000) + 60}s`,
    },
  },
};

export default function () {
  ws.connect(URL, {}, function (socket) {
    socket.on('open', () => socket.send(request));
    socket.on('message', (data) => {
      if (JSON.parse(data).type !== 'ping') {
        wrongFrames.add(1);
      }
      socket.send(request);
    });
    socket.setTimeout(() => socket.close(), HOLD_MS);
  });
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data) };
}
