// k6 side of the agent-pipeline benchmark (bench/run.py), the session written as a k6 user
// would: an HS256 JWT minted with k6/crypto for the VU's user, connect (k6/ws) with it,
// wait for the confirmation frame, send start_agent, check the five events arrive in order
// for this user (pong and ack ignored), each hand-timed with Date.now() from the send, close.
import ws from 'k6/ws';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { Counter, Trend } from 'k6/metrics';

const URL = __ENV.URL;
const SECRET = __ENV.JWT_SECRET_KEY;
const EVENTS = ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed'];
const eventTimes = {};
EVENTS.forEach((e) => { eventTimes[e] = new Trend(`event_${e}`, true); });
const passed = new Counter('sessions_passed');
const failed = new Counter('sessions_failed');

export const options = {
  scenarios: {
    pipeline: {
      executor: 'constant-vus',
      vus: parseInt(__ENV.VUS, 10),
      duration: __ENV.DURATION,
      gracefulStop: '10s',
    },
  },
};

function b64url(text) {
  return encoding.b64encode(text, 'rawurl');
}

function jwt(sub) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({
    sub: sub,
    iss: 'netra-auth-service',
    token_type: 'access',
    iat: now,
    exp: now + 3600,
    jti: `${__VU}-${__ITER}`,
  }));
  const signature = crypto.hmac('sha256', SECRET, `${header}.${claims}`, 'base64rawurl');
  return `${header}.${claims}.${signature}`;
}

export default function () {
  const sub = `user-${__VU}`;
  let next = 0;
  let ok = false;
  ws.connect(URL, { headers: { Authorization: `Bearer ${jwt(sub)}` } }, function (socket) {
    let sentAt = 0;
    socket.on('message', (data) => {
      const m = JSON.parse(data);
      if (sentAt === 0) {
        if (m.type === 'system_message' && m.data && m.data.event === 'connection_established') {
          sentAt = Date.now();
          socket.send(JSON.stringify({ type: 'start_agent', payload: { user_request: 'go' } }));
        }
        return;
      }
      if (m.type === 'pong' || m.type === 'ack') {
        return;
      }
      if (m.type !== EVENTS[next] || m.user_id !== sub) {
        socket.close();
        return;
      }
      eventTimes[m.type].add(Date.now() - sentAt);
      next += 1;
      if (next === EVENTS.length) {
        ok = true;
        socket.close();
      }
    });
    socket.setTimeout(() => socket.close(), 15000);
  });
  if (ok) {
    passed.add(1);
  } else {
    failed.add(1);
  }
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data) };
}
