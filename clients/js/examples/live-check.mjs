// A live check of the library against real services (tests/test_js_client.py runs it):
//   node --experimental-websocket examples/live-check.mjs WS_URL[,WS_URL...] USER_A USER_B
// Logs two users in, moves A twice, whispers B -> A, prints READY; then waits for A's
// session to be resumed (the test stops A's Gateway), moves A once more, and prints one
// JSON line with what happened.
import { GameClient } from "../gamebackbone.js";

const [urlList, userA, userB] = process.argv.slice(2);
const urls = urlList.split(",");
const a = new GameClient({ urls, requestTimeoutMs: 5000 });
const b = new GameClient({ urls: [urls.at(-1)], requestTimeoutMs: 5000 });
const statuses = [];
a.addEventListener("status", (e) => statuses.push(e.detail.status));
const whispered = new Promise((resolve) => a.addEventListener("whisper", (e) => resolve(e.detail)));

const login = await a.login(Number(userA));
await b.login(Number(userB));
const moves = [await a.move(1, 2), await a.move(3, 4)];
await b.whisper(Number(userA), "hello from B");
const whisper = await whispered;
const rtt = (await a.ping()).rtt_ms;
const reconnected = new Promise((resolve, reject) => {
  a.addEventListener("reconnected", (e) => resolve(e.detail));
  a.addEventListener("sessionlost", (e) => reject(new Error(e.detail.reason)));
});
console.log("READY");
const snapshot = await reconnected;
const after = await a.move(5, 6);
console.log(JSON.stringify({
  sessionId: login.session_id, moves, whisper, rtt, snapshot, after, statuses,
  sameSession: a.sessionId === login.session_id,
}));
a.close();
b.close();
