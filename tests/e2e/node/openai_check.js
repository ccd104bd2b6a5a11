// The official `openai` npm client (pinned in package.json) against `bitrack serve --http`:
// completions and chat completions, streamed and not, each equal to the text the test
// computed without HTTP (`bitrack run`, or the ZeroMQ protocol for chat); errors arrive
// as the client's typed exceptions with the right status.
//
// usage: node openai_check.js BASE_URL API_KEY MODEL PROMPT GREEDY SEEDED CHAT
"use strict";
const { OpenAI } = require("openai");

const [baseURL, apiKey, model, prompt, greedy, seeded, chatText] = process.argv.slice(2);
let failures = 0;
function check(cond, what) {
  console.log((cond ? "ok   " : "FAIL ") + "openai npm: " + what);
  if (!cond) failures++;
}

async function main() {
  // the two lines of setup a user writes
  const client = new OpenAI({ baseURL: baseURL + "/v1", apiKey });

  const c1 = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0 });
  check(c1.choices[0].text === greedy, `completions, greedy, not streamed: ${JSON.stringify(c1.choices[0].text)}`);
  check(c1.object === "text_completion" && c1.usage.completion_tokens > 0 && c1.id.startsWith("cmpl-"),
        "completions: object, usage and id in the OpenAI shapes");

  let text = "", chunks = 0, usage = null, finish = null;
  const s1 = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0.9, seed: 3, stream: true,
    stream_options: { include_usage: true },
  });
  for await (const ch of s1) {
    if (ch.usage) usage = ch.usage;
    if (ch.choices.length) {
      text += ch.choices[0].text;
      chunks++;
      if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
    }
  }
  check(text === seeded, `completions, seed 3, streamed: ${JSON.stringify(text)}`);
  check(chunks > 1 && usage && usage.completion_tokens > 0 && (finish === "length" || finish === "stop"),
        `completions stream: ${chunks} chunks, usage ${JSON.stringify(usage)}, finish ${finish}`);

  const messages = [{ role: "user", content: prompt }];
  const c2 = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0 });
  check(c2.choices[0].message.content === chatText && c2.choices[0].message.role === "assistant",
        `chat, greedy, not streamed: ${JSON.stringify(c2.choices[0].message.content)}`);

  let ctext = "", role = null;
  const s2 = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, stream: true });
  for await (const ch of s2) {
    if (!ch.choices.length) continue;
    if (ch.choices[0].delta.role) role = ch.choices[0].delta.role;
    ctext += ch.choices[0].delta.content || "";
  }
  check(ctext === chatText && role === "assistant", `chat, greedy, streamed: ${JSON.stringify(ctext)}`);

  // top_logprobs through the SDK, streamed and not: the same alternatives, sorted, <= 0,
  // the first carrying the greedy token's own logprob
  const lpq = { model, messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 4 };
  const c3 = await client.chat.completions.create(lpq);
  const lp3 = c3.choices[0].logprobs.content;
  const streamedLp = [];
  for await (const ch of await client.chat.completions.create({ ...lpq, stream: true })) {
    if (ch.choices.length && ch.choices[0].logprobs) streamedLp.push(...ch.choices[0].logprobs.content);
  }
  check(lp3.length > 0 && lp3.every((c) => c.top_logprobs.length === 4 &&
          c.top_logprobs[0].logprob === c.logprob &&
          c.top_logprobs.every((a, i) => a.logprob <= 0 && Array.isArray(a.bytes) &&
                               (i === 0 || a.logprob <= c.top_logprobs[i - 1].logprob))),
        `chat top_logprobs 4, greedy: sorted, <= 0, the first is the sampled token (${lp3.length} tokens)`);
  check(JSON.stringify(streamedLp) === JSON.stringify(lp3), "chat top_logprobs: streamed equals not streamed");
  const c4 = await client.completions.create({ model, prompt, max_tokens: 4, temperature: 0, logprobs: 2 });
  const l4 = c4.choices[0].logprobs;
  check(l4.top_logprobs.length === l4.tokens.length &&
        l4.top_logprobs.every((d, i) => Object.keys(d).length === 2 &&
                              Math.max(...Object.values(d)) === l4.token_logprobs[i]),
        "completions logprobs 2, greedy: two alternatives per token, the likeliest the sampled one");

  try {
    await client.completions.create({ model: "no-such-model", prompt, max_tokens: 2 });
    check(false, "an unknown model is refused");
  } catch (e) {
    check(e instanceof OpenAI.NotFoundError && e.status === 404, `an unknown model: ${e.status} ${e.message}`);
  }
  try {
    await client.chat.completions.create({ model, messages, n: 2 });
    check(false, "n = 2 is refused");
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === "n",
          `n = 2: ${e.status} param ${e.param}: ${e.message}`);
  }
  try {
    await client.completions.create({ model, prompt, max_tokens: 2, temperature: "hot" });
    check(false, "a wrong type is refused");
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.param === "temperature",
          `a wrong type: ${e.status} param ${e.param}`);
  }
  const bad = new OpenAI({ baseURL: baseURL + "/v1", apiKey: apiKey + "-wrong", maxRetries: 0 });
  if (apiKey !== "none") {
    try {
      await bad.completions.create({ model, prompt, max_tokens: 2 });
      check(false, "a wrong key is refused");
    } catch (e) {
      check(e instanceof OpenAI.AuthenticationError && e.status === 401, `a wrong key: ${e.status}`);
    }
  }
}

main().then(
  () => process.exit(failures ? 1 : 0),
  (e) => { console.log("FAIL openai npm: " + (e && e.stack || e)); process.exit(1); });
