// The frame codec against the byte-for-byte examples of docs/PROTOCOL.md §1.
import { test } from "node:test";
import assert from "node:assert/strict";

import { MsgType, ProtocolViolation, decodeFrame, encodeFrame } from "../gamebackbone.js";

const hex = (bytes) => Buffer.from(bytes).toString("hex");

test("the worked example: ECHO_REQ seq 1 {\"hi\":1}", () => {
  assert.equal(hex(encodeFrame(MsgType.ECHO_REQ, 1, { hi: 1 })),
    "00000010" + "0009" + "00" + "00" + "00000001" + "7b226869223a317d");
});

test("LOGIN_REQ and RECONNECT_REQ as in the table of examples", () => {
  // (The table's LOGIN accepts lz4; this client declines it, so its own LOGIN has no
  // accept_compression: the header and encoding rules are what is checked here.)
  assert.equal(hex(encodeFrame(MsgType.LOGIN_REQ, 1, { user_id: 42, accept_compression: ["lz4"] })),
    "00000033" + "0001" + "0000" + "00000001" + Buffer.from('{"user_id":42,"accept_compression":["lz4"]}').toString("hex"));
  assert.equal(hex(encodeFrame(MsgType.RECONNECT_REQ, 0, { session_id: 9, reconnect_key: "x" })),
    "0000002c" + "0003" + "0000" + "00000000" + "7b2273657373696f6e5f6964223a392c227265636f6e6e6563745f6b6579223a2278227d");
});

test("decoding: a kick, an empty payload, the answer fields", () => {
  const kick = Buffer.from("00000021" + "00c8" + "0000" + "00000000" +
    "7b22726561736f6e223a2249444c455f54494d454f5554227d", "hex");
  assert.deepEqual(decodeFrame(new Uint8Array(kick)), {
    msgType: MsgType.KICKOUT_NTF, flags: 0, sequenceId: 0, payload: { reason: "IDLE_TIMEOUT" },
  });
  const empty = Buffer.from("00000008000a000000000007", "hex");
  assert.deepEqual(decodeFrame(new Uint8Array(empty).buffer), {
    msgType: MsgType.ECHO_RES, flags: 0, sequenceId: 7, payload: {},
  });
  const unicode = encodeFrame(MsgType.ECHO_RES, 3, { text: "hé ✓" });
  assert.deepEqual(decodeFrame(unicode).payload, { text: "hé ✓" });
});

test("a message that is not exactly one good frame is a protocol violation", () => {
  const frame = encodeFrame(MsgType.ECHO_RES, 2, { a: 1 });
  const twoFrames = new Uint8Array([...frame, ...frame]);
  const lz4 = frame.slice();
  lz4[6] = 1;
  const reserved = frame.slice();
  reserved[7] = 1;
  const badJson = encodeFrame(MsgType.ECHO_RES, 2, {});
  const notJson = new Uint8Array([...badJson.slice(0, 3), 9, ...badJson.slice(4, 12), ...Buffer.from("{x")]);
  for (const bad of [frame.slice(0, 11), frame.slice(0, -1), twoFrames, lz4, reserved, notJson]) {
    assert.throws(() => decodeFrame(bad), ProtocolViolation);
  }
});

test("sequence ids are u32", () => {
  assert.throws(() => encodeFrame(MsgType.ECHO_REQ, -1, {}), RangeError);
  assert.throws(() => encodeFrame(MsgType.ECHO_REQ, 2 ** 32, {}), RangeError);
  assert.equal(decodeFrame(encodeFrame(MsgType.ECHO_REQ, 2 ** 32 - 1, {})).sequenceId, 2 ** 32 - 1);
});
