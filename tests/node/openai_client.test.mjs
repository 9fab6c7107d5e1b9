// semgate seen through the official OpenAI Node client (npm "openai" v4).
// Run by tests/integration/run_node.py, which starts the mock upstream and
// semgate and sets SEMGATE_URL (e.g. http://127.0.0.1:PORT/v1).
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = process.env.SEMGATE_URL;
const model = process.env.SEMGATE_MODEL || "gpt-4o-mini";
if (!baseURL) {
	console.error("SEMGATE_URL is not set");
	process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey: "sk-dummy", maxRetries: 0, timeout: 30000 });
const tag = `${process.pid}-${Date.now()}`;

const tests = {
	async chatNonStreaming() {
		const prompt = `Say hello (${tag} a)`;
		const res = await client.chat.completions.create({
			model,
			messages: [{ role: "user", content: prompt }],
		});
		assert.equal(res.choices[0].message.content, `mock answer to: ${prompt}`);
		assert.equal(res.choices[0].message.role, "assistant");
	},

	async chatWithRawResponseHeaders() {
		const prompt = `headers please (${tag} b)`;
		const { data, response } = await client.chat.completions
			.create({ model, messages: [{ role: "user", content: prompt }] })
			.withResponse();
		assert.equal(data.choices[0].message.content, `mock answer to: ${prompt}`);
		assert.ok(response.headers.get("x-request-id"), "x-request-id header missing");
		assert.equal(response.headers.get("x-semgate-upstream"), `${model}/0`);
	},

	async chatStreaming() {
		const prompt = `Stream a reply (${tag} c)`;
		const stream = await client.chat.completions.create({
			model,
			messages: [{ role: "user", content: prompt }],
			stream: true,
		});
		let content = "";
		let chunks = 0;
		for await (const chunk of stream) {
			chunks++;
			content += chunk.choices[0]?.delta?.content ?? "";
		}
		assert.ok(chunks >= 2, `only ${chunks} chunks`);
		assert.equal(content, `mock answer to: ${prompt}`);
	},

	async chatStreamCutIsAnError() {
		const prompt = `cut me (${tag} d) [[cut=2]]`;
		const stream = await client.chat.completions.create({
			model,
			messages: [{ role: "user", content: prompt }],
			stream: true,
		});
		await assert.rejects(async () => {
			for await (const _ of stream) {
				// drain
			}
		}, "a stream cut upstream ended cleanly");
	},

	async completions() {
		const prompt = `Once upon a time (${tag} e)`;
		const res = await client.completions.create({ model, prompt, max_tokens: 8 });
		assert.equal(res.choices[0].text, `mock answer to: ${prompt}`);
	},

	async embeddings() {
		const res = await client.embeddings.create({ model, input: `embed (${tag} f)` });
		assert.equal(res.data.length, 1);
		assert.equal(res.data[0].embedding.length, 8);
		for (const x of res.data[0].embedding) assert.equal(typeof x, "number");
	},

	async modelsList() {
		const ids = [];
		for await (const m of client.models.list()) ids.push(m.id);
		assert.deepEqual(ids, [model]);
	},

	async unknownModelIsNotFound() {
		await assert.rejects(
			client.chat.completions.create({
				model: "no-such-model",
				messages: [{ role: "user", content: "hi" }],
			}),
			(err) => {
				assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}`);
				assert.equal(err.status, 404);
				assert.equal(err.code, "model_not_found");
				return true;
			},
		);
	},

	async upstreamErrorStatus() {
		await assert.rejects(
			client.chat.completions.create({
				model,
				messages: [{ role: "user", content: `fail (${tag} g) [[status=429]]` }],
			}),
			(err) => {
				assert.ok(err instanceof OpenAI.RateLimitError, `got ${err?.constructor?.name}`);
				assert.equal(err.status, 429);
				return true;
			},
		);
	},
};

let failed = 0;
for (const [name, fn] of Object.entries(tests)) {
	try {
		await fn();
		console.log(`PASS ${name}`);
	} catch (err) {
		failed++;
		console.log(`FAIL ${name}`);
		console.log(err?.stack ?? err);
	}
}
console.log(`${Object.keys(tests).length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
