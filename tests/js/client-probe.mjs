#!/usr/bin/env node
// Drive a server with ElizaOS's own client, @elizaos/api-client 1.7.2 (ElizaClient), and print every result as JSON.
//
//   node tests/js/client-probe.mjs --base http://127.0.0.1:8000 [--agent-id UUID] [--api-key K] [--out FILE] [--label NAME]
// (vendored from the reference recordings' scripts; tests/test_elizaos_client.py runs it)
//
// Calls every SessionsService method (checkHealth, createSession, getSession, sendMessage [default, http,
// websocket, sse], sendMessageSync, getMessages [limit, before/after as Date, number and ISO string],
// deleteSession, listSessions), agents.listAgents / agents.getAgent, server.ping, and renew / heartbeat /
// PATCH timeout through the client's own (protected) request helpers, plus the error paths. Each call records
// either {ok: value} (what the client method resolved to) or {error: {name, code, message, details, status}}.
import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { ElizaClient } from '@elizaos/api-client';

const argv = process.argv.slice(2);
const o = { base: 'http://127.0.0.1:3100', agentId: null, apiKey: undefined, out: 'client-recordings.json', label: 'real' };
for (let i = 0; i < argv.length; i++) {
  const k = argv[i];
  const v = argv[++i];
  if (k === '--base') o.base = v;
  else if (k === '--agent-id') o.agentId = v;
  else if (k === '--api-key') o.apiKey = v;
  else if (k === '--out') o.out = v;
  else if (k === '--label') o.label = v;
  else {
    console.error(`unknown argument ${k}`);
    process.exit(2);
  }
}
const USER = '11111111-2222-4333-8444-555555555555';
const client = new ElizaClient({ baseUrl: o.base, apiKey: o.apiKey, timeout: 30000 });
const results = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function call(name, fn) {
  let entry;
  try {
    const value = await fn();
    entry = { call: name, ok: value === undefined ? '<undefined>' : value };
  } catch (e) {
    entry = { call: name, error: { name: e?.name, code: e?.code, message: e?.message, details: e?.details, status: e?.status } };
  }
  results.push(entry);
  const brief = JSON.stringify(entry.ok ?? entry.error);
  console.log(`${name.padEnd(58)} ${entry.error ? 'THROWS' : 'ok    '} ${brief.length > 160 ? brief.slice(0, 160) + '…' : brief}`);
  return entry.ok;
}

const S = client.sessions;
// discovery
const agents = await call('agents.listAgents()', () => client.agents.listAgents());
const agentId = o.agentId ?? agents?.agents?.[0]?.id;
await call('agents.getAgent(agentId)', async () => {
  const a = await client.agents.getAgent(agentId);
  // the character's settings.secrets hold the server's environment (encrypted): never print them
  if (a?.settings?.secrets) a.settings.secrets = Object.fromEntries(Object.keys(a.settings.secrets).map((k) => [k, '<redacted>']));
  return a;
});
await call('agents.getAgent(unknown uuid)', () => client.agents.getAgent(randomUUID()));
await call('server.ping()', () => client.server.ping());
await call('server.checkHealth()', () => client.server.checkHealth());

// sessions
await call('sessions.checkHealth()', () => S.checkHealth());
const created = await call('sessions.createSession({agentId, userId, metadata})', () => S.createSession({ agentId, userId: USER, metadata: { platform: 'client-probe' } }));
const sid = created?.sessionId;
await call('sessions.createSession({..., timeoutConfig}) (not in the client type)', () =>
  S.createSession({ agentId, userId: USER, timeoutConfig: { timeoutMinutes: 10, autoRenew: false } }),
);
await call('sessions.createSession({agentId: "agent-1"}) (non-UUID)', () => S.createSession({ agentId: 'agent-1', userId: USER }));
await call('sessions.createSession({unknown agent})', () => S.createSession({ agentId: randomUUID(), userId: USER }));
await call('sessions.getSession(sid)', () => S.getSession(sid));
await call('sessions.getSession(unknown)', () => S.getSession(randomUUID()));
await call('sessions.getSession("") (client-side check)', () => S.getSession(''));
await call('sessions.sendMessage(sid, {content}) (default transport)', () => S.sendMessage(sid, { content: 'hello default' }));
await call('sessions.sendMessage(sid, {content, transport: "websocket"})', () => S.sendMessage(sid, { content: 'hello ws', transport: 'websocket' }));
await call('sessions.sendMessage(sid, {content, transport: "http"})', () => S.sendMessage(sid, { content: 'hello http', transport: 'http' }));
await call('sessions.sendMessage(sid, {content, transport: "sse"})', () => S.sendMessage(sid, { content: 'hello sse', transport: 'sse' }));
await call('sessions.sendMessageSync(sid, {content})', () => S.sendMessageSync(sid, { content: 'hello sync' }));
await call('sessions.sendMessage(sid, {content: ""}) (client-side check)', () => S.sendMessage(sid, { content: '' }));
await call('sessions.sendMessage(sid, {content: 4001 chars})', () => S.sendMessage(sid, { content: 'a'.repeat(4001) }));
await call('sessions.sendMessage(unknown, {content})', () => S.sendMessage(randomUUID(), { content: 'x' }));
await sleep(3000); // let websocket-transport replies land in history

// history paging via the client's conversions (Date / number / string -> ms string)
const page = await call('sessions.getMessages(sid)', () => S.getMessages(sid));
await call('sessions.getMessages(sid, {limit: 2})', () => S.getMessages(sid, { limit: 2 }));
const msgs = page?.messages ?? [];
if (msgs.length >= 3) {
  const mid = msgs[Math.floor(msgs.length / 2)];
  const midDate = new Date(mid.createdAt);
  await call('sessions.getMessages(sid, {before: new Date(createdAt), limit: 3})', () => S.getMessages(sid, { before: midDate, limit: 3 }));
  await call('sessions.getMessages(sid, {before: createdAt ISO string, limit: 3})', () => S.getMessages(sid, { before: String(mid.createdAt), limit: 3 }));
  await call('sessions.getMessages(sid, {after: ms number, limit: 2})', () => S.getMessages(sid, { after: midDate.getTime(), limit: 2 }));
  await call('sessions.getMessages(sid, {before: "garbage"}) (client drops it)', () => S.getMessages(sid, { before: 'garbage' }));
  // a client walking backward with before: new Date(oldest.createdAt) must visit every message exactly once
  const seen = [];
  let before;
  for (let i = 0; i < 30; i++) {
    const r = await S.getMessages(sid, { limit: 2, ...(before ? { before } : {}) });
    if (!r.messages.length) break;
    seen.push(...r.messages.map((m) => m.id));
    before = new Date(r.messages[r.messages.length - 1].createdAt);
  }
  results.push({ call: 'walk back with before: new Date(last.createdAt), limit 2', ok: { visited: seen.length, distinct: new Set(seen).size, total: msgs.length } });
  console.log(`walk back: visited ${seen.length}, distinct ${new Set(seen).size}, of ${msgs.length}`);
}

// endpoints without a SessionsService method: the client's own request helpers
await call('sessions.request("POST", /renew)', () => S.request('POST', `/api/messaging/sessions/${sid}/renew`));
await call('sessions.request("POST", /heartbeat)', () => S.request('POST', `/api/messaging/sessions/${sid}/heartbeat`));
await call('sessions.patch(/timeout, {timeoutMinutes: 45})', () => S.patch(`/api/messaging/sessions/${sid}/timeout`, { timeoutMinutes: 45 }));
await call('sessions.patch(/timeout, {timeoutMinutes: 1}) (rejected)', () => S.patch(`/api/messaging/sessions/${sid}/timeout`, { timeoutMinutes: 1 }));

await call('sessions.listSessions()', async () => {
  const r = await S.listSessions();
  return r && Array.isArray(r.sessions) ? { ...r, sessions: [r.sessions[0], `…<${r.sessions.length} sessions in all>`] } : r;
});
await call('sessions.deleteSession(sid)', () => S.deleteSession(sid));
await call('sessions.deleteSession(sid) again', () => S.deleteSession(sid));
await call('sessions.getSession(sid) after delete', () => S.getSession(sid));

let out = {};
if (fs.existsSync(o.out)) out = JSON.parse(fs.readFileSync(o.out, 'utf8'));
out[o.label] = { base: o.base, agentId, recordedAt: new Date().toISOString(), results };
fs.writeFileSync(o.out, JSON.stringify(out, null, 2));
console.log(`wrote ${o.out} [${o.label}]`);
